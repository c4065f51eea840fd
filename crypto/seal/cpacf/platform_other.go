// SPDX-License-Identifier: Apache-2.0

//go:build !(linux && s390x)

package cpacf

import (
	"fmt"
	"runtime"
)

func openPlatform() (device, kmacer, error) {
	return nil, nil, fmt.Errorf("%w: CPACF and %s exist only on linux/s390x, this is %s/%s",
		ErrUnavailable, pkeyPath, runtime.GOOS, runtime.GOARCH)
}
