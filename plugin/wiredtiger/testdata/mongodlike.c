// SPDX-License-Identifier: Apache-2.0

// mongodlike drives WiredTiger the way mongod 8.0 does a collection with its
// _id index, for byokd's plugin tests: the connection, collection and index
// configurations are mongod's (the test passes them), a record is a
// RecordId (key_format=q) to a document (value_format=u), an index entry a
// KeyString (key_format=u) to the RecordId (value_format=u), both written in
// one transaction, and the journal is flushed to disk as mongod's journal
// flusher does before a write is acknowledged.
//
//   mongodlike DIR OPEN COLL INDEX load FROM N MARKER  create both tables if missing and
//                                                     write documents FROM..FROM+N-1; after
//                                                     every 100, flush the journal and print
//                                                     "durable K" (K documents acknowledged)
//   mongodlike DIR OPEN COLL INDEX verify N MARKER     every document and index entry reads
//                                                     back (N written as +N: at least N)
//   mongodlike DIR OPEN COLL INDEX hold               commands on stdin: "write FROM N MARKER",
//                                                     "scan", "checkpoint", "quit"; answers
//                                                     "ok ..." or "err ..."
//
// OPEN is the wiredtiger_open configuration; COLL and INDEX the create
// configurations of table:collection-0 and table:index-1.
// Exit status: 0 ok, 2 a WiredTiger call failed (its message on stderr), 1 a mismatch.
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wiredtiger.h>

#define DOC_SIZE 300
#define COLL "table:collection-0"
#define INDEX "table:index-1"

static char errbuf[1024];

static int handle_error(WT_EVENT_HANDLER *h, WT_SESSION *s, int error, const char *message) {
	(void)h, (void)s, (void)error;
	snprintf(errbuf, sizeof(errbuf), "%s", message);
	fprintf(stderr, "wiredtiger: %s\n", message);
	return 0;
}

// Messages (mongod's verbose recovery and checkpoint progress) go to stderr:
// stdout is the test's.
static int handle_message(WT_EVENT_HANDLER *h, WT_SESSION *s, const char *message) {
	(void)h, (void)s;
	fprintf(stderr, "wiredtiger: %s\n", message);
	return 0;
}

static WT_EVENT_HANDLER events = {.handle_error = handle_error, .handle_message = handle_message};

#define CHECK(call)                                                                           \
	do {                                                                                  \
		int _r = (call);                                                              \
		if (_r != 0) {                                                                \
			fprintf(stderr, "%s: %s (%s)\n", #call, wiredtiger_strerror(_r), errbuf); \
			exit(2);                                                              \
		}                                                                             \
	} while (0)

// doc is a document of DOC_SIZE bytes that starts with MARKER and the id.
static void doc(char *buf, const char *marker, int64_t id) {
	memset(buf, 'd', DOC_SIZE);
	int n = snprintf(buf, DOC_SIZE, "{_id: %" PRId64 ", note: \"%s-%010" PRId64 "\"}", id, marker, id);
	if (n >= 0 && n < DOC_SIZE)
		buf[n] = ' ';
}

// index_key is the _id index's key of a document: the marker and the id.
static size_t index_key(char *buf, size_t n, const char *marker, int64_t id) {
	return (size_t)snprintf(buf, n, "%s-%010" PRId64, marker, id);
}

static int write_docs(WT_CONNECTION *conn, WT_SESSION *s, int64_t from, int64_t n, const char *marker) {
	WT_CURSOR *c, *ix;
	char d[DOC_SIZE], k[64];
	WT_ITEM v, key, rid;
	int r;
	(void)conn;
	if ((r = s->open_cursor(s, COLL, NULL, NULL, &c)) != 0)
		return r;
	if ((r = s->open_cursor(s, INDEX, NULL, NULL, &ix)) != 0)
		return r;
	for (int64_t i = from; i < from + n && r == 0; i++) {
		for (int attempt = 0;; attempt++) {
			if ((r = s->begin_transaction(s, NULL)) != 0)
				break;
			doc(d, marker, i);
			v.data = d, v.size = DOC_SIZE;
			c->set_key(c, i + 1); // RecordIds start at 1
			c->set_value(c, &v);
			if ((r = c->insert(c)) == 0) {
				key.data = k, key.size = index_key(k, sizeof(k), marker, i);
				int64_t rec = i + 1;
				rid.data = &rec, rid.size = sizeof(rec);
				ix->set_key(ix, &key);
				ix->set_value(ix, &rid);
				r = ix->insert(ix);
			}
			if (r == 0)
				r = s->commit_transaction(s, NULL);
			else
				(void)s->rollback_transaction(s, NULL);
			if (r != WT_ROLLBACK || attempt == 100)
				break;
		}
		if (r == 0 && ((i + 1 - from) % 100 == 0 || i == from + n - 1)) {
			// mongod's journal flusher: the write is acknowledged once
			// the journal is on disk.
			if ((r = s->log_flush(s, "sync=on")) == 0 && getenv("MONGODLIKE_PROGRESS") != NULL) {
				printf("durable %" PRId64 "\n", i + 1);
				fflush(stdout);
			}
		}
	}
	(void)c->close(c);
	(void)ix->close(ix);
	return r;
}

// scan reads every document and its index entry back; with a marker it
// checks them: *bad counts documents or entries that differ, *below the
// documents whose id is below limit (ids are unique: limit of them means
// none is missing).
static int scan(WT_SESSION *s, const char *marker, int64_t limit, int64_t *count, int64_t *bad, int64_t *below) {
	WT_CURSOR *c, *ix;
	WT_ITEM v, rid, key;
	int64_t rec;
	char want[DOC_SIZE], k[64];
	int r;
	*count = *bad = *below = 0;
	if ((r = s->open_cursor(s, COLL, NULL, NULL, &c)) != 0)
		return r;
	if ((r = s->open_cursor(s, INDEX, NULL, NULL, &ix)) != 0)
		return r;
	while ((r = c->next(c)) == 0) {
		if ((r = c->get_key(c, &rec)) != 0 || (r = c->get_value(c, &v)) != 0)
			break;
		(*count)++;
		if (rec - 1 >= 0 && rec - 1 < limit)
			(*below)++;
		if (marker == NULL)
			continue;
		doc(want, marker, rec - 1);
		if (v.size != DOC_SIZE || memcmp(v.data, want, DOC_SIZE) != 0) {
			(*bad)++;
			continue;
		}
		key.data = k, key.size = index_key(k, sizeof(k), marker, rec - 1);
		ix->set_key(ix, &key);
		if ((r = ix->search(ix)) != 0 || (r = ix->get_value(ix, &rid)) != 0) {
			if (r != WT_NOTFOUND)
				break;
			r = 0;
			(*bad)++;
			continue;
		}
		if (rid.size != sizeof(rec) || memcmp(rid.data, &rec, sizeof(rec)) != 0)
			(*bad)++;
	}
	if (r == WT_NOTFOUND) {
		// Then the whole index, so that its pages are read too.
		(void)ix->reset(ix);
		while ((r = ix->next(ix)) == 0)
			;
	}
	(void)c->close(c);
	(void)ix->close(ix);
	return r == WT_NOTFOUND ? 0 : r;
}

int main(int argc, char **argv) {
	WT_CONNECTION *conn;
	WT_SESSION *s;
	if (argc < 6) {
		fprintf(stderr, "usage: mongodlike DIR OPEN COLL INDEX load|verify|hold ...\n");
		return 1;
	}
	const char *dir = argv[1], *open = argv[2], *coll = argv[3], *index = argv[4], *cmd = argv[5];
	CHECK(wiredtiger_open(dir, &events, open, &conn));
	CHECK(conn->open_session(conn, NULL, NULL, &s));
	if (strcmp(cmd, "load") == 0 && argc == 9) {
		CHECK(s->create(s, COLL, coll));
		CHECK(s->create(s, INDEX, index));
		CHECK(write_docs(conn, s, atoll(argv[6]), atoll(argv[7]), argv[8]));
		printf("loaded %s\n", argv[7]);
	} else if (strcmp(cmd, "verify") == 0 && argc == 8) {
		int64_t count, bad, below;
		int atleast = argv[6][0] == '+';
		int64_t want = atoll(argv[6] + atleast);
		CHECK(scan(s, argv[7], want, &count, &bad, &below));
		// Documents 0..want-1 all there, and with +N nothing else but more.
		if (below != want || (!atleast && count != want) || bad != 0) {
			printf("mismatch: %" PRId64 " documents (%" PRId64 " of the first %" PRId64 "), %" PRId64 " bad, want %s\n", count, below, want, bad, argv[6]);
			return 1;
		}
		printf("verified %" PRId64 "\n", count);
	} else if (strcmp(cmd, "hold") == 0) {
		char line[256], marker[64];
		int64_t from, n, count, bad, below;
		printf("ready\n");
		fflush(stdout);
		while (fgets(line, sizeof(line), stdin) != NULL) {
			int r = 0;
			errbuf[0] = '\0';
			if (sscanf(line, "write %" SCNd64 " %" SCNd64 " %63s", &from, &n, marker) == 3) {
				if ((r = write_docs(conn, s, from, n, marker)) == 0)
					printf("ok wrote %" PRId64 "\n", n);
			} else if (strncmp(line, "checkpoint", 10) == 0) {
				if ((r = s->checkpoint(s, NULL)) == 0)
					printf("ok checkpoint\n");
			} else if (strncmp(line, "scan", 4) == 0) {
				if ((r = scan(s, NULL, 0, &count, &bad, &below)) == 0)
					printf("ok scanned %" PRId64 "\n", count);
			} else if (strncmp(line, "quit", 4) == 0) {
				break;
			} else {
				printf("err unknown command\n");
			}
			if (r != 0)
				printf("err %s: %s\n", wiredtiger_strerror(r), errbuf);
			fflush(stdout);
		}
		printf("closed %d\n", conn->close(conn, NULL));
		return 0;
	} else {
		fprintf(stderr, "usage: bad command or arguments\n");
		return 1;
	}
	CHECK(conn->close(conn, NULL));
	return 0;
}
