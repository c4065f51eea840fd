// SPDX-License-Identifier: Apache-2.0

// fakehost loads libbyokd-wiredtiger.so the way WiredTiger does and calls its
// wiredtiger_extension_init with a connection whose every method aborts the
// process, but for the two the plugin may call in the line it is built to
// look like. e2e TestWiredTigerPluginChecksTheLine builds it as:
//   -DEXPORTED=\"11.4.0\" -rdynamic   exports wiredtiger_version answering 11.4.0
//   -DSTRING=\"WiredTiger 11.3.0: (...)\"  no wiredtiger_version; the version string in
//                                     its read-only data, as a static mongod has
//   -DSTRING=... -DSTRING2=...        two version strings
//   -DOTHER                           exports wiredtiger_version from the library
//                                     named by $FAKEHOST_OTHER (built from this
//                                     file with -DOTHER_LIB -shared), loaded first
//                                     and globally: a WiredTiger other than the
//                                     one whose connection the plugin gets
// and runs: fakehost PLUGIN.so. It prints "init returned N" and, when the
// plugin registered an encryptor, "add_encryptor NAME".
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OTHER_LIB
const char *wiredtiger_version(int *major, int *minor, int *patch) {
	*major = 11, *minor = 2, *patch = 0;
	return "WiredTiger 11.2.0: (another library)";
}
#else
#ifdef EXPORTED
const char *wiredtiger_version(int *major, int *minor, int *patch) {
	sscanf(EXPORTED, "%d.%d.%d", major, minor, patch);
	return "WiredTiger " EXPORTED;
}
#endif
#ifdef STRING
const char *volatile version_string = STRING;
#endif
#ifdef STRING2
const char *volatile version_string2 = STRING2;
#endif

static void trap(void) {
	fprintf(stderr, "fakehost: the plugin called a connection method it must not\n");
	abort();
}

// The 11.3 layout: get_extension_api in slot 20, add_encryptor in slot 15.
struct fake_api {
	void *conn;
	int (*err_printf)(void *, void *, const char *, ...);
	void *slots[7];
	int (*config_get)(void *, void *, void *, const char *, void *);
	void *more[32];
};
static void *connection[32];
static struct fake_api api;

static int err_printf(void *a, void *s, const char *fmt, ...) {
	va_list ap;
	(void)a, (void)s;
	va_start(ap, fmt);
	fprintf(stderr, "err_printf: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	return 0;
}
// config_get answers "socket" from $FAKEHOST_SOCKET (WT_CONFIG_ITEM starts
// with str and len in every supported line).
static int config_get(void *a, void *s, void *c, const char *key, void *v) {
	struct {
		const char *str;
		size_t len;
	} *item = v;
	const char *sock = getenv("FAKEHOST_SOCKET");
	(void)a, (void)s, (void)c;
	if (strcmp(key, "socket") != 0 || sock == NULL)
		return -31803; // WT_NOTFOUND
	item->str = sock, item->len = strlen(sock);
	return 0;
}
static void *get_extension_api(void *c) {
	(void)c;
	return &api;
}
static int add_encryptor(void *c, const char *name, void *enc, const char *cfg) {
	(void)c, (void)enc, (void)cfg;
	printf("add_encryptor %s\n", name);
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 2)
		return 2;
	for (int i = 0; i < 32; i++)
		connection[i] = (void *)trap;
	connection[20] = (void *)get_extension_api;
	connection[15] = (void *)add_encryptor;
	api.conn = connection;
	api.err_printf = err_printf;
	api.config_get = config_get;
#ifdef OTHER
	if (dlopen(getenv("FAKEHOST_OTHER"), RTLD_NOW | RTLD_GLOBAL) == NULL) {
		fprintf(stderr, "dlopen other: %s\n", dlerror());
		return 2;
	}
#endif
	void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	int (*init)(void *, void *) = (int (*)(void *, void *))dlsym(h, "wiredtiger_extension_init");
	if (init == NULL)
		return 2;
	printf("init returned %d\n", init(connection, (void *)1));
	return 0;
}
#endif // OTHER_LIB
