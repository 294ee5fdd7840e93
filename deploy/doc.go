// Package deploy holds no code: it is the monitoring stack that runs beside
// fastinfer (Prometheus configuration and alert rules, Grafana provisioning
// and dashboard, and a GPU docker-compose file), and deploy_test.go, which
// checks those files with promtool and against a live server and a real
// Prometheus. See README.md in this folder.
package deploy
