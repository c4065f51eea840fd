// SPDX-License-Identifier: Apache-2.0

package main

import "testing"

func TestMachineDescriptionParsers(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"x86 cpuinfo", cpuModel("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC   9654 96-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"), "AMD EPYC 9654 96-Core Processor"},
		{"s390x cpuinfo", cpuModel("vendor_id       : IBM/S390\n# processors    : 2\nprocessor 0: version = 00,  identification = 0B1234,  machine = 3931\n"), "IBM/S390 version = 00, identification = 0B1234, machine = 3931"},
		{"no cpuinfo", cpuModel(""), ""},
		{"meminfo", memTotal("MemTotal:       24683620 kB\nMemFree:        22965656 kB\n"), "23.5 GiB"},
		{"meminfo without kB", memTotal("MemTotal:       24683620\n"), ""},
		{"os-release pretty", osName("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n"), "Debian GNU/Linux 12 (bookworm)"},
		{"os-release without pretty", osName("NAME='Alpine Linux'\nVERSION_ID=3.20.1\n"), "Alpine Linux 3.20.1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
