// SPDX-License-Identifier: Apache-2.0

package main

import (
	"math"
	"testing"
)

func TestFormatting(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"count small", count(999), "999"},
		{"count thousands", count(1234567.4), "1,234,567"},
		{"count rounds up into a group", count(999999.7), "1,000,000"},
		{"count negative", count(-12345), "-12,345"},
		{"num large", num(3720), "3,720"},
		{"num hundreds", num(236.04), "236"},
		{"num tens", num(15.46), "15.5"},
		{"num units", num(1.966), "1.97"},
		{"num small", num(0.06556), "0.0656"},
		{"num zero", num(0), "0"},
		{"duration ns", duration(414.4), "414 ns"},
		{"duration µs", duration(158400), "158 µs"},
		{"duration ms", duration(1532000), "1.53 ms"},
		{"duration tens of ms", duration(47e6), "47.0 ms"},
		{"duration s", duration(1003e6), "1.00 s"},
		{"duration many s", duration(1234e9), "1,234 s"},
		{"mib", mib(17.14), "17.1 MiB"},
		{"ratio baseline", ratio(1), "1.00×"},
		{"ratio", ratio(1.6477), "1.65×"},
		{"ratio tens", ratio(12.34), "12.3×"},
		{"ratio hundreds", ratio(170.4), "170×"},
		{"ratio small as a fraction", ratio(1.0 / 170), "0.00588× (1/170)"},
		{"ratio of nothing", ratio(div(1, 0)), "n/a"},
		{"ratio NaN", ratio(math.NaN()), "n/a"},
		{"median odd", num(median([]float64{3, 1, 2})), "2.00"},
		{"median even", num(median([]float64{4, 1, 2, 3})), "2.50"},
		{"span", span([]float64{19589, 16636, 18000}, count), "16,636–19,589"},
		{"span of equal values", span([]float64{5, 5}, count), "5"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}
