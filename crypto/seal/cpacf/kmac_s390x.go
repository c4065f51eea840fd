// SPDX-License-Identifier: Apache-2.0

//go:build s390x

package cpacf

// machineKMAC is the KMAC instruction of this CPU (kmac_s390x.s).
//
// Only the query function ran here, under qemu-s390x 7.2, which emulates
// no KMAC function but the query: Run with function code 0x79 and a real
// protected key has not been executed (see docs/sealers.md).
type machineKMAC struct{}

func (machineKMAC) Query() (status [16]byte) {
	kmacQuery(&status)
	return status
}

func (machineKMAC) Run(gr0 uint64, param *paramBlock, msg []byte) (uint8, int) {
	var m *byte
	if len(msg) > 0 {
		m = &msg[0]
	}
	cc, left := kmacRun(gr0, &param[0], m, uint64(len(msg)))
	return uint8(cc), int(left)
}

// kmacQuery runs KMAC function code 0 (query), storing the 16-byte status
// word.
//
//go:noescape
func kmacQuery(status *[16]byte)

// kmacRun runs KMAC with general register 0 = gr0, general register 1 =
// param and the message in the even-odd pair R2, R3, resuming on condition
// code 3, and returns the final condition code and the bytes left in R3.
//
//go:noescape
func kmacRun(gr0 uint64, param, msg *byte, msgLen uint64) (cc, left uint64)
