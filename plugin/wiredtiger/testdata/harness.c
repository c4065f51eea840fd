// SPDX-License-Identifier: Apache-2.0

// harness drives a real WiredTiger database for byokd's plugin tests and the
// WiredTiger benchmark. Built by the tests with: cc -O2 -o harness harness.c -lwiredtiger
//
//   harness DIR CONFIG insert TABLE KEYID N MARKER   create TABLE (encryption keyid KEYID, or
//                                                    none when KEYID is "-"), insert N rows of
//                                                    100 bytes starting with MARKER, checkpoint
//   harness DIR CONFIG verify TABLE N MARKER         read every row back, check count and content
//                                                    (N written as +N: at least N rows)
//   harness DIR CONFIG hold TABLE                    keep the database open and take commands on
//                                                    stdin: "insert FROM N MARKER", "checkpoint",
//                                                    "scan", "quit"; answer "ok ..." or "err ..."
//   harness DIR CONFIG bench TABLE KEYID N           insert N 100-byte rows then read them back;
//                                                    print "insert_seconds read_seconds"
//
// CONFIG is the wiredtiger_open configuration (extensions, encryption...).
// Exit status: 0 ok, 2 a WiredTiger call failed (its message on stderr), 1 usage or a mismatch.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wiredtiger.h>

#define VALUE_SIZE 100
#define BATCH 100

static const char *last_error = "";
static char errbuf[1024];

static int handle_error(WT_EVENT_HANDLER *h, WT_SESSION *s, int error, const char *message) {
	(void)h;
	(void)s;
	(void)error;
	snprintf(errbuf, sizeof(errbuf), "%s", message);
	last_error = errbuf;
	fprintf(stderr, "wiredtiger: %s\n", message);
	return 0;
}

static WT_EVENT_HANDLER events = {handle_error, NULL, NULL, NULL};

#define CHECK(call)                                                                        \
	do {                                                                               \
		int _r = (call);                                                           \
		if (_r != 0) {                                                             \
			fprintf(stderr, "%s: %s (%s)\n", #call, wiredtiger_strerror(_r), last_error); \
			exit(2);                                                           \
		}                                                                          \
	} while (0)

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void value_for(char *buf, const char *marker, long i) {
	memset(buf, 'v', VALUE_SIZE);
	int n = snprintf(buf, VALUE_SIZE, "%s-%08ld-", marker, i);
	if (n >= 0 && n < VALUE_SIZE - 1)
		buf[n] = 'v';
	buf[VALUE_SIZE - 1] = '\0';
}

static void create(WT_SESSION *s, const char *table, const char *keyid) {
	char cfg[512];
	if (strcmp(keyid, "-") == 0)
		snprintf(cfg, sizeof(cfg), "key_format=S,value_format=S");
	else
		snprintf(cfg, sizeof(cfg), "key_format=S,value_format=S,encryption=(name=byokd,keyid=%s)", keyid);
	CHECK(s->create(s, table, cfg));
}

static int insert(WT_SESSION *s, const char *table, long from, long n, const char *marker) {
	WT_CURSOR *c;
	char key[32], val[VALUE_SIZE];
	int r;
	if ((r = s->open_cursor(s, table, NULL, NULL, &c)) != 0)
		return r;
	// Batches of BATCH rows per transaction. WiredTiger 11 answers
	// WT_ROLLBACK when a transaction would pin too much of a small cache:
	// the batch is rolled back and written again, as an application does.
	for (long b = from; b < from + n && r == 0; b += BATCH) {
		long end = b + BATCH < from + n ? b + BATCH : from + n;
		for (int attempt = 0;; attempt++) {
			if ((r = s->begin_transaction(s, NULL)) != 0)
				break;
			for (long i = b; i < end && r == 0; i++) {
				snprintf(key, sizeof(key), "key%010ld", i);
				value_for(val, marker, i);
				c->set_key(c, key);
				c->set_value(c, val);
				r = c->insert(c);
			}
			if (r == 0)
				r = s->commit_transaction(s, NULL);
			else
				(void)s->rollback_transaction(s, NULL);
			if (r != WT_ROLLBACK || attempt == 100)
				break;
			r = 0;
		}
		if (r == 0 && getenv("HARNESS_PROGRESS") != NULL) {
			// The crash test kills the process after these lines:
			// every row counted here is committed.
			printf("committed %ld\n", end);
			fflush(stdout);
		}
	}
	(void)c->close(c);
	return r;
}

// scan reads every row; *count gets the number, *bad the rows whose value is
// not what insert wrote (when marker is not NULL), *below the rows whose
// number is below limit (keys are unique: limit of them means none missing).
static int scan(WT_SESSION *s, const char *table, const char *marker, long limit, long *count, long *bad, long *below) {
	WT_CURSOR *c;
	const char *k, *v;
	char want[VALUE_SIZE];
	int r;
	*count = *bad = *below = 0;
	if ((r = s->open_cursor(s, table, NULL, NULL, &c)) != 0)
		return r;
	while ((r = c->next(c)) == 0) {
		if ((r = c->get_key(c, &k)) != 0 || (r = c->get_value(c, &v)) != 0)
			break;
		long id = atol(k + 3);
		if (id >= 0 && id < limit)
			(*below)++;
		if (marker != NULL) {
			value_for(want, marker, id);
			if (strcmp(v, want) != 0)
				(*bad)++;
		}
		(*count)++;
	}
	(void)c->close(c);
	return r == WT_NOTFOUND ? 0 : r;
}

int main(int argc, char **argv) {
	WT_CONNECTION *conn;
	WT_SESSION *s;
	if (argc < 5) {
		fprintf(stderr, "usage: harness DIR CONFIG insert|verify|hold|bench TABLE ...\n");
		return 1;
	}
	const char *dir = argv[1], *config = argv[2], *cmd = argv[3], *table = argv[4];
	CHECK(wiredtiger_open(dir, &events, config, &conn));
	CHECK(conn->open_session(conn, NULL, NULL, &s));

	if (strcmp(cmd, "insert") == 0 && argc == 8) {
		create(s, table, argv[5]);
		CHECK(insert(s, table, 0, atol(argv[6]), argv[7]));
		CHECK(s->checkpoint(s, NULL));
		printf("inserted %ld\n", atol(argv[6]));
	} else if (strcmp(cmd, "verify") == 0 && argc == 7) {
		long count, bad, below;
		int atleast = argv[5][0] == '+';
		long want = atol(argv[5] + atleast);
		CHECK(scan(s, table, argv[6], want, &count, &bad, &below));
		// Rows 0..want-1 all there, and with +N nothing else but more rows.
		if (below != want || (!atleast && count != want) || bad != 0) {
			printf("mismatch: %ld rows (%ld of the first %ld), %ld bad, want %s\n", count, below, want, bad, argv[5]);
			return 1;
		}
		printf("verified %ld\n", count);
	} else if (strcmp(cmd, "hold") == 0) {
		char line[256], marker[64];
		long from, n, count, bad, below;
		printf("ready\n");
		fflush(stdout);
		while (fgets(line, sizeof(line), stdin) != NULL) {
			int r = 0;
			last_error = "";
			if (sscanf(line, "insert %ld %ld %63s", &from, &n, marker) == 3) {
				r = insert(s, table, from, n, marker);
				if (r == 0)
					printf("ok inserted %ld\n", n);
			} else if (strncmp(line, "checkpoint", 10) == 0) {
				if ((r = s->checkpoint(s, NULL)) == 0)
					printf("ok checkpoint\n");
			} else if (strncmp(line, "scan", 4) == 0) {
				if ((r = scan(s, table, NULL, 0, &count, &bad, &below)) == 0)
					printf("ok scanned %ld\n", count);
			} else if (strncmp(line, "quit", 4) == 0) {
				break;
			} else {
				printf("err unknown command\n");
			}
			if (r != 0)
				printf("err %s: %s\n", wiredtiger_strerror(r), last_error);
			fflush(stdout);
		}
		// Close without a final checkpoint of unwritable data: what was
		// committed and checkpointed before is what must survive.
		int r = conn->close(conn, NULL);
		printf("closed %d\n", r);
		return 0;
	} else if (strcmp(cmd, "bench") == 0 && argc == 7) {
		long n = atol(argv[6]), count, bad, below;
		create(s, table, argv[5]);
		double t0 = now();
		CHECK(insert(s, table, 0, n, "bench"));
		CHECK(s->checkpoint(s, NULL));
		double t1 = now();
		CHECK(s->close(s, NULL));
		CHECK(conn->close(conn, NULL));
		// Reopen so that every page is read from disk and decrypted.
		CHECK(wiredtiger_open(dir, &events, config, &conn));
		CHECK(conn->open_session(conn, NULL, NULL, &s));
		double t2 = now();
		CHECK(scan(s, table, "bench", n, &count, &bad, &below));
		double t3 = now();
		if (count != n || below != n || bad != 0) {
			printf("mismatch: %ld rows, %ld bad\n", count, bad);
			return 1;
		}
		printf("%.3f %.3f\n", t1 - t0, t3 - t2);
	} else {
		fprintf(stderr, "usage: bad command or arguments\n");
		return 1;
	}
	CHECK(conn->close(conn, NULL));
	return 0;
}
