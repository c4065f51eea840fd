//go:build !linux

package secmem

func mapLocked(int) ([]byte, bool, error) { return nil, false, ErrNotSupported }

func unmap([]byte) {}
