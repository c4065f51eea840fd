// SPDX-License-Identifier: Apache-2.0

// layout_probe checks plugin/wiredtiger/layout.h against one WiredTiger
// line's own headers. Built by e2e TestWiredTigerLayouts with
//   cc -I <the line's include folder> -o layout_probe layout_probe.c
// It fails to compile when a signature the plugin relies on differs, and
// exits 1 (saying what differs) when a slot does.
#include <stddef.h>
#include <stdio.h>
#include <wiredtiger.h>
#include <wiredtiger_ext.h>

#include "../layout.h"

#define SAME_TYPE(a, b) __builtin_types_compatible_p(__typeof__(a), b)
typedef int (*crypt_fn)(WT_ENCRYPTOR *, WT_SESSION *, uint8_t *, size_t, uint8_t *, size_t, size_t *);
_Static_assert(SAME_TYPE(((WT_ENCRYPTOR *)0)->encrypt, crypt_fn), "WT_ENCRYPTOR.encrypt");
_Static_assert(SAME_TYPE(((WT_ENCRYPTOR *)0)->decrypt, crypt_fn), "WT_ENCRYPTOR.decrypt");
_Static_assert(SAME_TYPE(((WT_ENCRYPTOR *)0)->sizing, int (*)(WT_ENCRYPTOR *, WT_SESSION *, size_t *)), "sizing");
_Static_assert(SAME_TYPE(((WT_ENCRYPTOR *)0)->customize,
                   int (*)(WT_ENCRYPTOR *, WT_SESSION *, WT_CONFIG_ARG *, WT_ENCRYPTOR **)),
    "WT_ENCRYPTOR.customize");
_Static_assert(SAME_TYPE(((WT_ENCRYPTOR *)0)->terminate, int (*)(WT_ENCRYPTOR *, WT_SESSION *)), "terminate");
_Static_assert(SAME_TYPE(((WT_CONNECTION *)0)->get_extension_api, WT_EXTENSION_API *(*)(WT_CONNECTION *)),
    "WT_CONNECTION.get_extension_api");
_Static_assert(SAME_TYPE(((WT_CONNECTION *)0)->add_encryptor,
                   int (*)(WT_CONNECTION *, const char *, WT_ENCRYPTOR *, const char *)),
    "WT_CONNECTION.add_encryptor");
_Static_assert(SAME_TYPE(((WT_EXTENSION_API *)0)->err_printf, int (*)(WT_EXTENSION_API *, WT_SESSION *, const char *, ...)),
    "WT_EXTENSION_API.err_printf");
_Static_assert(SAME_TYPE(((WT_EXTENSION_API *)0)->config_get,
                   int (*)(WT_EXTENSION_API *, WT_SESSION *, WT_CONFIG_ARG *, const char *, WT_CONFIG_ITEM *)),
    "WT_EXTENSION_API.config_get");
_Static_assert(BYOKD_WT_ERROR == WT_ERROR, "WT_ERROR");
_Static_assert(offsetof(WT_CONFIG_ITEM, str) == 0 && offsetof(WT_CONFIG_ITEM, len) == sizeof(void *), "WT_CONFIG_ITEM");

static const struct byokd_wt_line lines[] = {BYOKD_WT_LINES};
#define SLOT(f, T) ((int)(offsetof(T, f) / sizeof(void *)))

int main(void) {
	int bad = 0;
	const struct byokd_wt_line *line = NULL;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (lines[i].major == WIREDTIGER_VERSION_MAJOR && lines[i].minor == WIREDTIGER_VERSION_MINOR)
			line = &lines[i];
	if (line == NULL) {
		printf("layout.h has no line for WiredTiger %d.%d\n", WIREDTIGER_VERSION_MAJOR, WIREDTIGER_VERSION_MINOR);
		return 1;
	}
#define CHECK(what, want, got)                                                        \
	if ((want) != (got)) {                                                          \
		printf("%s: layout.h says slot %d, WiredTiger %d.%d has %d\n", what, (int)(want), \
		    WIREDTIGER_VERSION_MAJOR, WIREDTIGER_VERSION_MINOR, (int)(got));          \
		bad = 1;                                                                \
	}
	CHECK("WT_CONNECTION.get_extension_api", line->get_extension_api, SLOT(get_extension_api, WT_CONNECTION));
	CHECK("WT_CONNECTION.add_encryptor", line->add_encryptor, SLOT(add_encryptor, WT_CONNECTION));
	CHECK("WT_EXTENSION_API.conn", BYOKD_WT_EXT_API_CONN, SLOT(conn, WT_EXTENSION_API));
	CHECK("WT_EXTENSION_API.err_printf", BYOKD_WT_EXT_API_ERR_PRINTF, SLOT(err_printf, WT_EXTENSION_API));
	CHECK("WT_EXTENSION_API.config_get", BYOKD_WT_EXT_API_CONFIG_GET, SLOT(config_get, WT_EXTENSION_API));
	CHECK("sizeof(WT_ENCRYPTOR)", BYOKD_WT_ENCRYPTOR_SLOTS, (int)(sizeof(WT_ENCRYPTOR) / sizeof(void *)));
	printf("WiredTiger %d.%d (%s): get_extension_api slot %d, add_encryptor slot %d%s\n", line->major, line->minor,
	    line->use, line->get_extension_api, line->add_encryptor, bad ? ": MISMATCH" : ": as layout.h says");
	return bad;
}
