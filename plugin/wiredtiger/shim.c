// The WiredTiger side of the byokd encryptor: fills WT_ENCRYPTOR with static
// callbacks that call the exported Go functions, reads the extension's and
// each table's configuration, and reports errors through WiredTiger.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <wiredtiger.h>
#include <wiredtiger_ext.h>

#include "_cgo_export.h"

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

// wiredtiger_extension_init is called when WiredTiger loads the library:
// extensions=[/usr/lib/byokd/libbyokd-wiredtiger.so=(config="socket=...,mode=release")].
int wiredtiger_extension_init(WT_CONNECTION *connection, WT_CONFIG_ARG *config) {
	WT_EXTENSION_API *api = connection->get_extension_api(connection);
	char socket[4096], mode[64], msg[ERRLEN] = "";
	int ret;

	registered.api = api;
	item(api, config, "socket", socket, sizeof(socket));
	item(api, config, "mode", mode, sizeof(mode));
	if ((ret = byokdInit(socket, mode, msg, ERRLEN)) != 0) {
		(void)api->err_printf(api, NULL, "%s", msg);
		return ret;
	}
	return connection->add_encryptor(connection, "byokd", &registered.enc, NULL);
}
