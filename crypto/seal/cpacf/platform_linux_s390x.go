// SPDX-License-Identifier: Apache-2.0

//go:build linux && s390x

package cpacf

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openPlatform asks the CPU first, which needs no device, then opens
// /dev/pkey.
func openPlatform() (device, kmacer, error) {
	k := machineKMAC{}
	if !installed(k.Query(), fcPHMACSHA256) {
		return nil, nil, fmt.Errorf("%w: the CPU has no KMAC HMAC-SHA-256 with encrypted key (function code %#x)", ErrUnavailable, fcPHMACSHA256)
	}
	dev, err := openPkeyDevice(pkeyPath)
	if err != nil {
		return nil, nil, err
	}
	return dev, k, nil
}

func openPkeyDevice(path string) (*pkeyDevice, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if reason := errnoReason(err); reason != "" {
			return nil, fmt.Errorf("%w: open %s: %w (%s)", ErrUnavailable, path, err, reason)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &pkeyDevice{fd: fd}, nil
}

// pkeyDevice is /dev/pkey. The Sealer calls it with its lock held for
// writing, and the probe before the Sealer is shared, so calls never overlap;
// mu only guards Close.
type pkeyDevice struct {
	mu sync.Mutex
	fd int // -1 after Close
}

// ProtectKey issues PKEY_KBLOB2PROTK3 with the blob and the out buffer.
// Neither is copied: both point into the Sealer's locked memory.
func (d *pkeyDevice) ProtectKey(blob, out []byte) (int, uint32, error) {
	if len(blob) == 0 || len(out) == 0 {
		return 0, 0, unix.EINVAL
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return 0, 0, unix.EBADF
	}
	req := kblob2pkey3{
		key:     &blob[0],
		keylen:  uint32(len(blob)),
		pkeylen: uint32(len(out)),
		pkey:    &out[0],
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), kblob2protk3, uintptr(unsafe.Pointer(&req)))
		switch errno {
		case 0:
			return int(req.pkeylen), req.pkeytype, nil
		case unix.EINTR:
			continue
		default:
			return 0, 0, errno
		}
	}
}

func (d *pkeyDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}
