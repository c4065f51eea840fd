// SPDX-License-Identifier: Apache-2.0

package main

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// count formats x rounded to an integer with thousands separators:
// 1234567.4 → "1,234,567".
func count(x float64) string {
	s := strconv.FormatFloat(math.Round(x), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// num formats x readably: thousands separators from 1,000 up, three
// significant digits below (236, 15.5, 0.0664).
func num(x float64) string {
	a := math.Abs(x)
	switch {
	case a >= 999.5:
		return count(x)
	case a == 0:
		return "0"
	case a >= 99.95:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 9.995:
		return strconv.FormatFloat(x, 'f', 1, 64)
	case a >= 0.9995:
		return strconv.FormatFloat(x, 'f', 2, 64)
	default:
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
}

// duration formats a time given in nanoseconds in the unit that suits
// it: "415 ns", "158 µs", "1.53 ms", "47.0 ms", "2.10 s", "1,234 s".
func duration(ns float64) string {
	a := math.Abs(ns)
	switch {
	case a < 999.5:
		return num(ns) + " ns"
	case a < 999.5e3:
		return num(ns/1e3) + " µs"
	case a < 999.5e6:
		return num(ns/1e6) + " ms"
	default:
		return num(ns/1e9) + " s"
	}
}

// mib formats a size in MiB with one decimal: "17.1 MiB".
func mib(x float64) string {
	if x >= 999.5 {
		return count(x) + " MiB"
	}
	return strconv.FormatFloat(x, 'f', 1, 64) + " MiB"
}

// ratio formats a ratio against a baseline: "1.00×", "1.96×", "170×"; a
// ratio under 0.1 also as a fraction, "0.0059× (1/170)", which reads
// better than its decimals.
func ratio(r float64) string {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return "n/a"
	case r == 0:
		return "0×"
	case r < 0.1:
		return num(r) + "× (1/" + count(1/r) + ")"
	case r >= 99.95:
		return count(r) + "×"
	case r >= 9.995:
		return strconv.FormatFloat(r, 'f', 1, 64) + "×"
	default:
		return strconv.FormatFloat(r, 'f', 2, 64) + "×"
	}
}

// div is a/b, or NaN when b is 0 (ratio prints "n/a").
func div(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// median of vs (mean of the middle two for an even count); NaN if empty.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// span formats the range of vs with f: "16,636–19,589", or one value.
func span(vs []float64, f func(float64) string) string {
	if len(vs) == 0 {
		return "n/a"
	}
	lo, hi := vs[0], vs[0]
	for _, v := range vs {
		lo, hi = min(lo, v), max(hi, v)
	}
	if f(lo) == f(hi) {
		return f(lo)
	}
	return f(lo) + "–" + f(hi)
}
