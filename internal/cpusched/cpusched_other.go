//go:build !linux

package cpusched

// Set accepts only Normal off Linux.
func Set(policy string) (int, error) {
	if policy == Normal || policy == "" {
		return 0, nil
	}
	return 0, ErrUnsupported
}

// Current is unknown off Linux.
func Current() (string, error) { return "", ErrUnsupported }
