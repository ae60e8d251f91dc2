/* test_memstore.c: the in-memory maildrop backend (store/mem.c) and the
 * UIDL digest (store/maildrop.c). */
#include "testutil.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "store/maildrop.h"

static void
test_sizes_and_uidls(void **state)
{
	struct mem_store *ms = mem_store_new();
	struct maildrop *md;

	mem_store_add(ms, "a", "x\ny\n", 4);          /* LF: 6 octets */
	mem_store_add(ms, "b", "x\r\ny\r\n", 6);      /* CRLF: 6 octets */
	mem_store_add(ms, "c", "no newline", 10);
	mem_store_add(ms, "d", "\n\r\n\r", 4);         /* 2 + 2 + 1 */
	mem_store_add(ms, "e", "", 0);
	assert_int_equal(mem_store_count(ms), 5);
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 5);
	assert_int_equal(md->msgs[0].size, 6);
	assert_int_equal(md->msgs[1].size, 6);
	assert_int_equal(md->msgs[2].size, 10);
	assert_int_equal(md->msgs[3].size, 5);
	assert_int_equal(md->msgs[4].size, 0);
	assert_string_equal(md->msgs[0].uidl, "a");
	assert_string_equal(md->msgs[4].uidl, "e");
	assert_true(md->msgs[0].received < md->msgs[1].received);
	maildrop_close(&md);
	assert_null(md);
	mem_store_free(&ms);
	assert_null(ms);
}

static void
test_read_raw_bytes(void **state)
{
	static const char msg[] = "Subject: hi\n\n.dot\nend";
	struct mem_store *ms = mem_store_new();
	struct maildrop *md;
	size_t len;
	char *data;

	mem_store_add(ms, "u", msg, strlen(msg));
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	data = tu_read_msg(md, 1, 0, &len);         /* octet by octet */
	assert_int_equal(len, strlen(msg));
	assert_memory_equal(data, msg, len);
	free(data);
	data = tu_read_msg(md, 4096, 0, &len);
	assert_int_equal(len, strlen(msg));
	assert_memory_equal(data, msg, len);
	free(data);
	maildrop_close(&md);
	mem_store_free(&ms);
}

static void
test_lock(void **state)
{
	struct mem_store *ms = mem_store_new();
	struct maildrop *md, *md2;

	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 0);
	assert_int_equal(mem_store_open(ms, &md2), MAILDROP_OPEN_IN_USE);
	maildrop_close(&md);
	assert_int_equal(mem_store_open(ms, &md2), MAILDROP_OPEN_OK);
	maildrop_close(&md2);
	mem_store_free(&ms);
}

static void
test_commit_snapshot(void **state)
{
	struct mem_store *ms = mem_store_new();
	struct maildrop *md;
	bool del[3] = { true, false, true };
	unsigned failed = 99;

	mem_store_add(ms, "1", "one\n", 4);
	mem_store_add(ms, "2", "two\n", 4);
	mem_store_add(ms, "3", "three\n", 6);
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	/* Delivered while open: invisible, and commit leaves it alone. */
	mem_store_add(ms, "4", "four\n", 5);
	assert_int_equal(md->count, 3);
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	assert_int_equal(failed, 0);
	maildrop_close(&md);
	assert_int_equal(mem_store_count(ms), 2);
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 2);
	assert_string_equal(md->msgs[0].uidl, "2");
	assert_string_equal(md->msgs[1].uidl, "4");
	maildrop_close(&md);
	mem_store_free(&ms);
}

static void
test_faults(void **state)
{
	struct mem_store *ms = mem_store_new();
	struct maildrop *md;
	struct msg_stream *s;
	bool del[2] = { true, true };
	unsigned failed = 0;

	mem_store_add(ms, "1", "one\n", 4);
	mem_store_add(ms, "2", "two\n", 4);
	mem_store_set_faults(ms, true, true);
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	assert_int_equal(md->v->msg_open(md, 0, &s), -1);
	assert_int_equal(md->v->commit(md, del, &failed), -1);
	assert_int_equal(failed, 2);
	maildrop_close(&md);
	assert_int_equal(mem_store_count(ms), 2);
	mem_store_set_faults(ms, false, false);
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	assert_int_equal(md->v->msg_open(md, 0, &s), 0);
	md->v->msg_close(s);
	assert_int_equal(md->v->msg_open(md, 2, &s), -1);
	maildrop_close(&md);
	mem_store_free(&ms);
}

static void
test_uidl_digest(void **state)
{
	struct mem_store *ms = mem_store_new();
	struct maildrop *md;
	char d[17];

	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	maildrop_uidl_digest(md, d);
	/* SHA-256 of the empty string. */
	assert_string_equal(d, "e3b0c44298fc1c14");
	maildrop_close(&md);
	mem_store_add(ms, "abc", "x", 1);
	assert_int_equal(mem_store_open(ms, &md), MAILDROP_OPEN_OK);
	maildrop_uidl_digest(md, d);
	/* printf 'abc\n' | sha256sum */
	assert_string_equal(d, "edeaaff3f1774ad2");
	maildrop_close(&md);
	mem_store_free(&ms);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes_and_uidls),
		cmocka_unit_test(test_read_raw_bytes),
		cmocka_unit_test(test_lock),
		cmocka_unit_test(test_commit_snapshot),
		cmocka_unit_test(test_faults),
		cmocka_unit_test(test_uidl_digest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
