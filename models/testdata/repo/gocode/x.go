package gocode
