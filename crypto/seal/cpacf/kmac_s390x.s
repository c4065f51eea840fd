// SPDX-License-Identifier: Apache-2.0

//go:build s390x

#include "textflag.h"

// KMAC (COMPUTE MESSAGE AUTHENTICATION CODE) is RRE-format opcode 0xb91e.
// The Go assembler has no mnemonic for it, so it is spelled as a word:
// 0xb91e0002 is KMAC R0, R2 (R1 field 0, unused; R2 field 2, the even-odd
// pair R2, R3 holding the message address and length). General register 0
// holds the function code and flags, general register 1 the parameter
// block address.

// func kmacQuery(status *[16]byte)
TEXT ·kmacQuery(SB), NOSPLIT|NOFRAME, $0-8
	MOVD	$0, R0             // function code 0: query
	MOVD	status+0(FP), R1   // the status word is the parameter block
	MOVD	$0, R2
	MOVD	$0, R3
	WORD	$0xb91e0002        // KMAC R0, R2
	RET

// func kmacRun(gr0 uint64, param, msg *byte, msgLen uint64) (cc, left uint64)
TEXT ·kmacRun(SB), NOSPLIT|NOFRAME, $0-48
	MOVD	gr0+0(FP), R0
	MOVD	param+8(FP), R1
	MOVD	msg+16(FP), R2
	MOVD	msgLen+24(FP), R3
loop:
	WORD	$0xb91e0002        // KMAC R0, R2
	BVS	loop               // condition code 3: partial completion, resume
	BEQ	cc0
	BLT	cc1
	MOVD	$2, R4             // condition code 2: not architected for KMAC
	BR	done
cc0:
	MOVD	$0, R4
	BR	done
cc1:
	MOVD	$1, R4             // condition code 1: wrapping key mismatch
done:
	MOVD	R4, cc+32(FP)
	MOVD	R3, left+40(FP)
	RET
