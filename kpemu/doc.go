// SPDX-License-Identifier: Apache-2.0

// Package kpemu emulates IBM Key Protect's v2 API and the IAM token endpoint
// closely enough that the real keyprotect-go-client works against it unchanged.
//
// It keeps root and standard keys with their versions, states and aliases,
// wraps and unwraps with AES-256-GCM under per-version key material, keeps
// registrations, key policies (rotation, which rotates keys on its schedule,
// and dual authorization) and instance policies (network policies enforced),
// answers errors in the service's JSON shape with the service's status and
// reason codes, and can inject faults (latency, 5xx, 429, connection resets,
// outages, refusals of networks, proxies and load balancers) through an admin
// API under /_kpemu/. It is used by cmd/kpemu, cmd/byokd-dev (make run) and
// the tests, never by the production byokd; it shares no code with byokd's
// client side, so it can catch that side's mistakes.
package kpemu
