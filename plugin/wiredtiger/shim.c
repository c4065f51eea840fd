// SPDX-License-Identifier: Apache-2.0

// The WiredTiger side of the byokd encryptor: finds which WiredTiger loaded
// it, fills WT_ENCRYPTOR with static callbacks that call the exported Go
// functions, reads the extension's and each table's configuration, and
// reports errors through WiredTiger.
//
// It is compiled against any supported wiredtiger.h (Debian's 3.2.1): the
// only part of WiredTiger's interface that differs between the supported
// lines, WT_CONNECTION's method table, is reached through layout.h.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wiredtiger.h>
#include <wiredtiger_ext.h>

#include "_cgo_export.h"
#include "layout.h"

#define SLOT(n) ((n) * sizeof(void *))
_Static_assert(offsetof(WT_EXTENSION_API, conn) == SLOT(BYOKD_WT_EXT_API_CONN), "WT_EXTENSION_API.conn");
_Static_assert(offsetof(WT_EXTENSION_API, err_printf) == SLOT(BYOKD_WT_EXT_API_ERR_PRINTF), "WT_EXTENSION_API.err_printf");
_Static_assert(offsetof(WT_EXTENSION_API, config_get) == SLOT(BYOKD_WT_EXT_API_CONFIG_GET), "WT_EXTENSION_API.config_get");
_Static_assert(sizeof(WT_ENCRYPTOR) == SLOT(BYOKD_WT_ENCRYPTOR_SLOTS), "WT_ENCRYPTOR");

typedef struct {
	WT_ENCRYPTOR enc; // first: WiredTiger hands back a WT_ENCRYPTOR *
	WT_EXTENSION_API *api;
	int handle; // 0 for the registered, uncustomized encryptor
} byokd_encryptor;

#define ERRLEN 512

static int report(byokd_encryptor *be, WT_SESSION *session, int ret, const char *msg) {
	if (ret != 0 && be->api != NULL && msg[0] != '\0')
		(void)be->api->err_printf(be->api, session, "%s", msg);
	return ret;
}

static int byokd_encrypt(WT_ENCRYPTOR *enc, WT_SESSION *session, uint8_t *src, size_t src_len,
    uint8_t *dst, size_t dst_len, size_t *result_lenp) {
	byokd_encryptor *be = (byokd_encryptor *)enc;
	char msg[ERRLEN] = "";
	int ret = byokdEncrypt(be->handle, src, src_len, dst, dst_len, result_lenp, msg, ERRLEN);
	return report(be, session, ret, msg);
}

static int byokd_decrypt(WT_ENCRYPTOR *enc, WT_SESSION *session, uint8_t *src, size_t src_len,
    uint8_t *dst, size_t dst_len, size_t *result_lenp) {
	byokd_encryptor *be = (byokd_encryptor *)enc;
	char msg[ERRLEN] = "";
	int ret = byokdDecrypt(be->handle, src, src_len, dst, dst_len, result_lenp, msg, ERRLEN);
	return report(be, session, ret, msg);
}

static int byokd_sizing(WT_ENCRYPTOR *enc, WT_SESSION *session, size_t *expansion_constantp) {
	(void)enc;
	(void)session;
	*expansion_constantp = (size_t)byokdOverhead();
	return 0;
}

static int byokd_terminate(WT_ENCRYPTOR *enc, WT_SESSION *session) {
	byokd_encryptor *be = (byokd_encryptor *)enc;
	(void)session;
	if (be->handle != 0) {
		byokdRelease(be->handle);
		free(be);
	}
	return 0;
}

static int byokd_customize(WT_ENCRYPTOR *enc, WT_SESSION *session, WT_CONFIG_ARG *encrypt_config,
    WT_ENCRYPTOR **customp) {
	byokd_encryptor *be = (byokd_encryptor *)enc, *custom;
	WT_CONFIG_ITEM keyid;
	char msg[ERRLEN] = "";
	int handle, ret;

	if ((ret = be->api->config_get(be->api, session, encrypt_config, "keyid", &keyid)) != 0 || keyid.len == 0) {
		(void)be->api->err_printf(be->api, session,
		    "byokd: encryption=(name=byokd) needs a keyid, e.g. encryption=(name=byokd,keyid=table1)");
		return EINVAL;
	}
	handle = byokdCustomize((char *)keyid.str, keyid.len, msg, ERRLEN);
	if (handle <= 0)
		return report(be, session, handle == 0 ? EIO : -handle, msg);
	if ((custom = calloc(1, sizeof(*custom))) == NULL) {
		byokdRelease(handle);
		return ENOMEM;
	}
	custom->enc = be->enc;
	custom->api = be->api;
	custom->handle = handle;
	*customp = &custom->enc;
	return 0;
}

static byokd_encryptor registered = {
	.enc = {
		.encrypt = byokd_encrypt,
		.decrypt = byokd_decrypt,
		.sizing = byokd_sizing,
		.customize = byokd_customize,
		.terminate = byokd_terminate,
	},
};

static void item(WT_EXTENSION_API *api, WT_CONFIG_ARG *config, const char *key, char *out, size_t outlen) {
	WT_CONFIG_ITEM v;
	out[0] = '\0';
	if (config == NULL || api->config_get(api, NULL, config, key, &v) != 0)
		return;
	if (v.len >= outlen)
		v.len = outlen - 1;
	memcpy(out, v.str, v.len);
	out[v.len] = '\0';
}

static const struct byokd_wt_line lines[] = {BYOKD_WT_LINES};
#define NLINES (sizeof(lines) / sizeof(lines[0]))

// supported lists the supported lines for messages: "3.2, 11.2 (mongod 7.0), ...".
static void supported(char *buf, size_t n) {
	size_t off = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < NLINES && off < n; i++) {
		off += (size_t)snprintf(buf + off, n - off, "%s%d.%d (%s)", i ? ", " : "", lines[i].major, lines[i].minor, lines[i].use);
	}
}

struct scan {
	const void *code; // an address in the object that owns the connection
	int owner, n, major, minor, patch, ambiguous;
};

// holds reports whether addr lies in one of an object's loaded segments.
static int holds(struct dl_phdr_info *info, const void *addr) {
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = (uintptr_t)(info->dlpi_addr + ph->p_vaddr);
		if (ph->p_type == PT_LOAD && (uintptr_t)addr >= lo && (uintptr_t)addr < lo + ph->p_memsz)
			return 1;
	}
	return 0;
}

// scan_object looks for WiredTiger's version string ("WiredTiger 11.3.0: (")
// in the read-only segments of the object that holds the connection's code
// (libwiredtiger.so, or a database that links WiredTiger statically).
static int scan_object(struct dl_phdr_info *info, size_t size, void *arg) {
	static const char pfx[] = "WiredTiger ";
	struct scan *s = arg;
	(void)size;
	if (!holds(info, s->code))
		return 0;
	s->owner = 1;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) || !(ph->p_flags & PF_R))
			continue;
		const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_filesz;
		while (p < end && (p = memmem(p, (size_t)(end - p), pfx, sizeof(pfx) - 1)) != NULL) {
			int major, minor, patch, used = 0;
			p += sizeof(pfx) - 1;
			char tail[32];
			size_t k = (size_t)(end - p) < sizeof(tail) - 1 ? (size_t)(end - p) : sizeof(tail) - 1;
			memcpy(tail, p, k);
			tail[k] = '\0';
			if (sscanf(tail, "%d.%d.%d: (%n", &major, &minor, &patch, &used) != 3 || used == 0)
				continue;
			if (s->n > 0 && (major != s->major || minor != s->minor || patch != s->patch))
				s->ambiguous = 1;
			s->n++;
			s->major = major, s->minor = minor, s->patch = patch;
		}
	}
	return 1; // the owner is found: stop
}

typedef const char *(*version_fn)(int *, int *, int *);

// loaded_version finds which WiredTiger the connection belongs to, asking
// only the object that holds the connection's code (code: one of its
// methods), whatever else the process has loaded: that object's
// wiredtiger_version when it exports one (libwiredtiger.so does), else the
// one version string in it (a database that links WiredTiger statically).
// It returns 0 when it cannot tell.
static int loaded_version(const void *code, int *major, int *minor, int *patch, const char **how) {
	Dl_info owner, found;
	if (code == NULL || dladdr(code, &owner) == 0)
		return 0;
	version_fn f = (version_fn)dlsym(RTLD_DEFAULT, "wiredtiger_version");
	if (f != NULL && dladdr((void *)f, &found) != 0 && found.dli_fbase == owner.dli_fbase) {
		(void)f(major, minor, patch);
		*how = "wiredtiger_version";
		return 1;
	}
	struct scan s = {.code = code};
	(void)dl_iterate_phdr(scan_object, &s);
	if (!s.owner || s.n == 0 || s.ambiguous)
		return 0;
	*major = s.major, *minor = s.minor, *patch = s.patch;
	*how = "its version string";
	return 1;
}

typedef WT_EXTENSION_API *(*get_extension_api_fn)(WT_CONNECTION *);
typedef int (*add_encryptor_fn)(WT_CONNECTION *, const char *, WT_ENCRYPTOR *, const char *);

static void *method(WT_CONNECTION *connection, int slot) {
	void *fn;
	memcpy(&fn, (char *)connection + SLOT((size_t)slot), sizeof(fn));
	return fn;
}

// wiredtiger_extension_init is called when WiredTiger loads the library:
// extensions=[/usr/lib/byokd/libbyokd-wiredtiger.so=(config="socket=...,mode=release")].
// Loaded into a WiredTiger line it does not know, it registers nothing and
// fails the open, saying so on stderr (WiredTiger's own error reporting is
// reached through the very table whose layout is unknown).
int wiredtiger_extension_init(WT_CONNECTION *connection, WT_CONFIG_ARG *config) {
	const struct byokd_wt_line *line = NULL;
	const char *how = "";
	char socket[4096], mode[64], msg[ERRLEN] = "", list[256];
	int major = 0, minor = 0, patch = 0, ret;

	supported(list, sizeof(list));
	// Slot 0 is a method in every line (async_flush in 3.2, close since):
	// its address names the object that implements this connection.
	if (!loaded_version(method(connection, 0), &major, &minor, &patch, &how)) {
		fprintf(stderr,
		    "byokd: libbyokd-wiredtiger.so cannot tell which WiredTiger loaded it (no wiredtiger_version, no single "
		    "version string): not registering the byokd encryptor; it supports WiredTiger %s\n",
		    list);
		return ENOTSUP;
	}
	for (size_t i = 0; i < NLINES; i++)
		if (lines[i].major == major && lines[i].minor == minor)
			line = &lines[i];
	if (line == NULL) {
		fprintf(stderr,
		    "byokd: libbyokd-wiredtiger.so supports WiredTiger %s; it was loaded into WiredTiger %d.%d.%d (from %s): "
		    "not registering the byokd encryptor\n",
		    list, major, minor, patch, how);
		return ENOTSUP;
	}
	WT_EXTENSION_API *api = ((get_extension_api_fn)method(connection, line->get_extension_api))(connection);
	if (api == NULL || api->conn != connection) {
		fprintf(stderr,
		    "byokd: WiredTiger %d.%d.%d did not answer get_extension_api as WiredTiger %d.%d does: not registering "
		    "the byokd encryptor\n",
		    major, minor, patch, line->major, line->minor);
		return ENOTSUP;
	}

	registered.api = api;
	item(api, config, "socket", socket, sizeof(socket));
	item(api, config, "mode", mode, sizeof(mode));
	if ((ret = byokdInit(socket, mode, msg, ERRLEN)) != 0) {
		(void)api->err_printf(api, NULL, "%s", msg);
		return ret;
	}
	return ((add_encryptor_fn)method(connection, line->add_encryptor))(connection, "byokd", &registered.enc, NULL);
}
