// SPDX-License-Identifier: Apache-2.0

// The parts of WiredTiger's extension interface that differ between the
// WiredTiger lines the plugin supports, and those it relies on being equal.
//
// WT_CONNECTION is a table of methods that WiredTiger reorders between lines
// (11.2 dropped the async methods of 3.2; 11.3 added compile_configuration),
// so the plugin never calls it through a compiled-in layout: it finds which
// WiredTiger loaded it, then calls get_extension_api and add_encryptor by
// their slot in that line's table. Everything else it uses (WT_ENCRYPTOR,
// WT_CONFIG_ITEM, WT_EXTENSION_API's err_printf and config_get) has the same
// layout and signatures in every supported line.
//
// testdata/layout_probe.c checks every number here against each line's own
// wiredtiger.h (e2e TestWiredTigerLayouts, against WiredTiger built from the
// snapshots mongod embeds); shim.c checks the common part against the header
// it is compiled with.
#ifndef BYOKD_WT_LAYOUT_H
#define BYOKD_WT_LAYOUT_H

struct byokd_wt_line {
	int major, minor;
	const char *use;       // what runs it (the mongod releases that embed it), for messages
	int get_extension_api; // slot (pointer index) of the method in WT_CONNECTION
	int add_encryptor;
};

#define BYOKD_WT_LINES                                                   \
	{3, 2, "development", 19, 16},                                           \
	{11, 2, "mongod 7.0", 19, 14},                                           \
	{11, 3, "mongod 8.0", 20, 15},

// The common layout, in pointer slots, identical in every supported line.
#define BYOKD_WT_EXT_API_CONN 0
#define BYOKD_WT_EXT_API_ERR_PRINTF 1
#define BYOKD_WT_EXT_API_CONFIG_GET 9
#define BYOKD_WT_ENCRYPTOR_SLOTS 5
// WT_ERROR: what a decryptor returns for corrupt data (salvage skips the
// block on it, and stops on any other error).
#define BYOKD_WT_ERROR (-31802)

#endif
