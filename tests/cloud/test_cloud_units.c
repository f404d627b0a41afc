/*
 * test_cloud_units.c - unit tests of the cloud layer's data structures: the paged KV block manager (allocation,
 * reservations, copy-on-write, prefix cache with LRU eviction, chained hashes), API keys and per-key limits, the
 * OpenAI request parser (accepts what it should, rejects with the right status and parameter), the streaming
 * reasoning/tool-call splitter and the usage ledger.
 */
#include "harness.h"

#include "../../src/cloud/cloud-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ==== Block manager ==== */

static void fill(int32_t *t, int32_t n, int32_t base) {
    for (int32_t i = 0; i < n; i++) t[i] = base + i;
}

static void test_blocks_admit_release(void) {
    struct ty_block_mgr *m;
    CHECK_OK(ty__block_mgr_init(10, 0, &m));
    int32_t toks[64];
    fill(toks, 64, 100);
    struct ty_block_table a, b;
    int32_t cached;
    /* 40 prompt tokens = 3 blocks; room for 64 = 4 blocks: 3 taken, 1 reserved */
    CHECK_OK(ty__block_admit(m, toks, 40, 64, &a, &cached));
    CHECK(cached == 0 && a.n == 3 && a.n_reserved == 1);
    struct ty_block_stats st;
    ty__block_mgr_stats(m, &st);
    CHECK(st.n_used == 3 && st.n_free == 7 && st.n_reserved == 1);
    /* 6 blocks are available now (7 free - 1 reserved): a 7-block request must wait */
    CHECK(ty__block_admit(m, toks, 40, 16 * 7, &b, &cached) == TY_ERR_NO_MEMORY);
    CHECK_OK(ty__block_admit(m, toks, 40, 16 * 6, &b, &cached));
    ty__block_mgr_stats(m, &st);
    CHECK(st.n_free - st.n_reserved == 0);
    /* growing into the reservation always works; past it fails when nothing is free */
    int32_t from, to;
    for (int i = 40; i < 64; i++) CHECK_OK(ty__block_append(m, &a, &from, &to));
    CHECK(a.n == 4 && a.n_reserved == 0 && a.n_tokens == 64);
    CHECK(ty__block_append(m, &a, &from, &to) == TY_ERR_NO_MEMORY);
    ty__block_release(m, &a);
    ty__block_release(m, &b);
    ty__block_mgr_stats(m, &st);
    CHECK(st.n_used == 0 && st.n_free == 10 && st.n_reserved == 0);
    ty__block_mgr_free(m);
}

static void test_blocks_cow(void) {
    struct ty_block_mgr *m;
    CHECK_OK(ty__block_mgr_init(16, 0, &m));
    int32_t toks[40];
    fill(toks, 40, 7);
    struct ty_block_table a, b;
    int32_t cached, from, to;
    CHECK_OK(ty__block_admit(m, toks, 20, 40, &a, &cached)); /* 2 blocks, the second half full */
    CHECK_OK(ty__block_fork(m, &a, 2, &b));
    CHECK(ty__block_refcount(m, a.ids[0]) == 2 && ty__block_refcount(m, a.ids[1]) == 2);
    int32_t shared_last = a.ids[1];
    /* the first writer to the shared partial block gets a copy; the other keeps the original */
    CHECK_OK(ty__block_append(m, &b, &from, &to));
    CHECK(from == shared_last && to >= 0 && to != shared_last && b.ids[1] == to);
    CHECK(ty__block_refcount(m, shared_last) == 1 && ty__block_refcount(m, to) == 1);
    CHECK_OK(ty__block_append(m, &a, &from, &to));
    CHECK(from == -1 && a.ids[1] == shared_last);
    /* the full first block stays shared */
    CHECK(a.ids[0] == b.ids[0] && ty__block_refcount(m, a.ids[0]) == 2);
    ty__block_release(m, &a);
    CHECK(ty__block_refcount(m, b.ids[0]) == 1);
    ty__block_release(m, &b);
    struct ty_block_stats st;
    ty__block_mgr_stats(m, &st);
    CHECK(st.n_used == 0 && st.n_reserved == 0);
    ty__block_mgr_free(m);
}

static void test_blocks_prefix_cache(void) {
    struct ty_block_mgr *m;
    CHECK_OK(ty__block_mgr_init(8, 4, &m));
    int32_t p1[50], p2[50];
    fill(p1, 50, 1000);
    fill(p2, 50, 1000);
    p2[40] = 5; /* same first two blocks, different third */
    struct ty_block_table a, b;
    int32_t cached;
    CHECK_OK(ty__block_admit(m, p1, 50, 50, &a, &cached));
    CHECK(cached == 0);
    ty__block_publish(m, &a, p1, 50);
    int32_t a0 = a.ids[0], a1 = a.ids[1];
    /* while a runs, b shares its computed prefix blocks */
    CHECK_OK(ty__block_admit(m, p2, 50, 50, &b, &cached));
    CHECK(cached == 32 && b.ids[0] == a0 && b.ids[1] == a1 && ty__block_refcount(m, a0) == 2);
    ty__block_release(m, &b);
    ty__block_release(m, &a);
    struct ty_block_stats st;
    ty__block_mgr_stats(m, &st);
    CHECK(st.n_cached == 3 && st.n_used == 0); /* three full blocks of p1 were published */
    /* after both ended, the cached blocks are found again */
    CHECK_OK(ty__block_admit(m, p1, 50, 50, &a, &cached));
    CHECK(cached == 48 && a.ids[0] == a0);
    ty__block_release(m, &a);
    /* a prompt that is exactly 3 blocks computes its last block itself (its logits start the reply) */
    CHECK_OK(ty__block_admit(m, p1, 48, 48, &a, &cached));
    CHECK(cached == 32);
    ty__block_release(m, &a);
    /* a different first token shares nothing: the hash is chained */
    int32_t p3[50];
    fill(p3, 50, 1000);
    p3[0] = 1;
    CHECK_OK(ty__block_admit(m, p3, 50, 50, &a, &cached));
    CHECK(cached == 0);
    ty__block_release(m, &a);
    /* filling the pool evicts cached blocks (LRU) instead of refusing */
    int32_t big[128];
    fill(big, 128, 9);
    CHECK_OK(ty__block_admit(m, big, 128, 128, &a, &cached));
    ty__block_mgr_stats(m, &st);
    CHECK(st.n_used == 8 && st.n_cached == 0);
    ty__block_release(m, &a);
    ty__block_mgr_stats(m, &st);
    CHECK(st.prefix_hits > 0 && st.prefix_queries >= st.prefix_hits);
    ty__block_mgr_free(m);
}

static void test_block_hash(void) {
    int32_t t[TY_KV_BLOCK];
    fill(t, TY_KV_BLOCK, 0);
    struct ty_block_hash h1, h2, h3;
    ty__block_hash(NULL, t, &h1);
    ty__block_hash(NULL, t, &h2);
    CHECK(!memcmp(h1.h, h2.h, 32));
    ty__block_hash(&h1, t, &h3); /* same tokens, different parent */
    CHECK(memcmp(h1.h, h3.h, 32));
    t[TY_KV_BLOCK - 1] ^= 1 << 20; /* a high bit of one token changes the hash */
    ty__block_hash(NULL, t, &h2);
    CHECK(memcmp(h1.h, h2.h, 32));
    /* SHA-256 of 32 zero bytes then the little-endian int32 ids 0..15, from Python's hashlib */
    int32_t seq[TY_KV_BLOCK];
    fill(seq, TY_KV_BLOCK, 0);
    ty__block_hash(NULL, seq, &h2);
    static const uint8_t want[8] = {0xaa, 0x33, 0x03, 0x74, 0x28, 0x8a, 0xcb, 0xdc};
    CHECK(!memcmp(h2.h, want, 8));
}

/* ==== Keys and limits ==== */

static void test_keys(void) {
    const char *path = ty_test_tmp("keys.tsv");
    unlink(path);
    struct ty_keyring ring;
    CHECK_OK(ty__keys_load(path, &ring));
    CHECK(ring.n == 0);
    char s1[96], s2[96];
    CHECK_OK(ty__keys_create(&ring, "alice", 2, 0, 1, s1, sizeof s1));
    CHECK_OK(ty__keys_create(&ring, "bob", 0, 100, 0, s2, sizeof s2));
    CHECK(ty__keys_create(&ring, "alice", 0, 0, 0, s2 + 0, sizeof s2) == TY_ERR_INVALID_ARG);
    CHECK(!strncmp(s1, "sk-ty-", 6) && strlen(s1) == 70 && strcmp(s1, s2));
    CHECK_OK(ty__keys_save(path, &ring));
    ty__keys_free(&ring);

    /* the file holds neither key */
    char *text = NULL;
    size_t n;
    CHECK_OK(ty__file_read(path, 1 << 20, &text, &n));
    CHECK(text && !strstr(text, s1 + 6) && !strstr(text, s2 + 6));
    ty_free(text);

    CHECK_OK(ty__keys_load(path, &ring));
    CHECK(ring.n == 2);
    struct ty_key *a = ty__keys_find(&ring, s1, strlen(s1));
    CHECK(a && !strcmp(a->name, "alice"));
    CHECK(ty__keys_find(&ring, s1, strlen(s1) - 1) == NULL);
    char wrong[96];
    memcpy(wrong, s1, sizeof wrong);
    wrong[20] = wrong[20] == 'a' ? 'b' : 'a';
    CHECK(ty__keys_find(&ring, wrong, strlen(wrong)) == NULL);

    /* alice: 2 requests per minute, 1 at a time */
    int64_t retry;
    const char *which = "";
    CHECK(ty__keys_acquire(&ring, a, 100.0, &retry, &which));
    CHECK(!ty__keys_acquire(&ring, a, 100.0, &retry, &which) && !strcmp(which, "concurrent requests") && retry >= 1);
    ty__keys_release(&ring, a, 100.0, 10);
    CHECK(ty__keys_acquire(&ring, a, 100.0, &retry, &which));
    ty__keys_release(&ring, a, 100.0, 10);
    CHECK(!ty__keys_acquire(&ring, a, 100.0, &retry, &which) && !strcmp(which, "requests per minute"));
    CHECK(retry == 30); /* one request refills in 60/2 s */
    CHECK(ty__keys_acquire(&ring, a, 130.5, &retry, &which));
    ty__keys_release(&ring, a, 130.5, 0);

    /* bob: 100 tokens per minute; a request that used 150 puts the bucket in debt */
    struct ty_key *b = ty__keys_find(&ring, s2, strlen(s2));
    CHECK(b && ty__keys_acquire(&ring, b, 0.0, &retry, &which));
    ty__keys_release(&ring, b, 0.0, 150);
    CHECK(!ty__keys_acquire(&ring, b, 1.0, &retry, &which) && !strcmp(which, "tokens per minute"));
    CHECK(retry > 0 && retry <= 31);
    CHECK(ty__keys_acquire(&ring, b, 40.0, &retry, &which));
    ty__keys_release(&ring, b, 40.0, 0);

    /* revoked keys never match */
    a->revoked = true;
    CHECK(ty__keys_find(&ring, s1, strlen(s1)) == NULL);
    ty__keys_free(&ring);
}

/* ==== Request parser ==== */

static int parse_status(enum ty_api_kind kind, const char *body, char *param_out) {
    struct ty_oai_request r;
    struct ty_oai_error e;
    enum ty_status st = ty__oai_parse(kind, body, strlen(body), "m", &r, &e);
    if (st == TY_OK) {
        ty__oai_request_free(&r);
        return 200;
    }
    if (param_out) strcpy(param_out, e.param);
    char *j = ty__oai_error_json(&e);
    CHECK(j && strstr(j, "\"error\"") && strstr(j, "\"message\""));
    ty_free(j);
    return e.status;
}

static void test_parser_accepts(void) {
    struct ty_oai_request r;
    struct ty_oai_error e;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":"
        "null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{\\\"x\\\":1}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}],"
        "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":20,\"min_p\":0.05,\"max_completion_tokens\":12,\"stop\":[\"x\","
        "\"yy\"],\"seed\":7,\"n\":3,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"logprobs\":true,"
        "\"top_logprobs\":5,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"tools\":[{\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"auto\","
        "\"chat_template_kwargs\":{\"enable_thinking\":false},\"user\":\"u\",\"response_format\":{\"type\":\"text\"}}";
    CHECK_OK(ty__oai_parse(TY_API_CHAT, body, strlen(body), "m", &r, &e));
    CHECK(r.n_msgs == 4 && !strcmp(r.msgs[1].content, "ab") && r.msgs[2].content == NULL);
    CHECK(r.msgs[2].tool_calls_json && strstr(r.msgs[2].tool_calls_json, "\"name\": \"f\""));
    CHECK(r.temperature == 0.5 && r.top_k == 20 && r.max_tokens == 12 && r.n_stop == 2 && !strcmp(r.stop[1], "yy"));
    CHECK(r.has_seed && r.seed == 7 && r.n == 3 && r.logprobs && r.top_logprobs == 5);
    CHECK(r.stream && r.include_usage && r.tools_json && r.thinking == TY_CHAT_THINKING_OFF);
    ty__oai_request_free(&r);
    const char *c = "{\"prompt\":\"hi\",\"logprobs\":2,\"stop\":\"\\n\"}";
    CHECK_OK(ty__oai_parse(TY_API_COMPLETION, c, strlen(c), "m", &r, &e));
    CHECK(!strcmp(r.prompt, "hi") && r.max_tokens == 16 && r.logprobs && r.top_logprobs == 2 && r.n_stop == 1);
    ty__oai_request_free(&r);
    const char *ids = "{\"prompt\":[1,2,3],\"max_tokens\":4}";
    CHECK_OK(ty__oai_parse(TY_API_COMPLETION, ids, strlen(ids), "m", &r, &e));
    CHECK(r.n_prompt_ids == 3 && r.prompt_ids[2] == 3 && !r.prompt);
    ty__oai_request_free(&r);
}

static void test_parser_rejects(void) {
    char p[64];
#define M "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
    CHECK(parse_status(TY_API_CHAT, "{", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "[]", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{}", p) == 400 && !strcmp(p, "messages"));
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":[]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":\"hi\"}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", p) == 400 &&
          !strcmp(p, "messages[0].role"));
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"max_tokens\":-1}", p) == 400 && !strcmp(p, "max_tokens"));
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"max_tokens\":0}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"max_tokens\":99999999999}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"max_tokens\":\"5\"}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"max_tokens\":5.5}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"temperature\":3}", p) == 400 && !strcmp(p, "temperature"));
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"temperature\":\"hot\"}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"top_p\":0}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"n\":0}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"n\":1000}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"stop\":[1]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"stop\":\"\"}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"top_logprobs\":3}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"logprobs\":true,\"top_logprobs\":21}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"stream_options\":{\"include_usage\":true}}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"bogus\":1}", p) == 400 && !strcmp(p, "bogus"));
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"model\":\"other\"}", NULL) == 404);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"model\":5}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"response_format\":{\"type\":\"json_schema\"}}", p) == 400 &&
          !strcmp(p, "response_format"));
    /* constrained decoding (model/constrain.c): served, with its own checks */
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"response_format\":{\"type\":\"json_object\"}}", NULL) == 200);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"response_format\":{\"type\":\"json_object\",\"x\":1}}", p) == 400 &&
          !strcmp(p, "response_format"));
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"tool_choice\":\"required\"}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"logit_bias\":{\"5\":1}}", NULL) == 200);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"logit_bias\":{\"5\":101}}", p) == 400 && !strcmp(p, "logit_bias"));
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"logit_bias\":{\"-5\":1}}", p) == 400 && !strcmp(p, "logit_bias"));
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"tools\":[{\"type\":\"function\"}]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{" M ",\"n\":1,\"n\":2}", NULL) == 400); /* duplicate key */
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", NULL) == 400);
    CHECK(parse_status(TY_API_CHAT,
                       "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
                       NULL) == 400);
    CHECK(parse_status(TY_API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", NULL) == 400);
    CHECK(parse_status(TY_API_COMPLETION, "{\"prompt\":[-1]}", NULL) == 400);
    CHECK(parse_status(TY_API_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", NULL) == 400);
    CHECK(parse_status(TY_API_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":9}", NULL) == 400);
    CHECK(parse_status(TY_API_COMPLETION, "{\"prompt\":\"x\",\"messages\":[]}", NULL) == 400);
#undef M
}

/* ==== Streaming split ==== */

struct collected {
    struct ty_buf reasoning, content;
    int n_tools;
    char tools[4][256];
    int n_events;
};

static void collect(void *user, enum ty_stream_part part, const char *text, size_t n, int idx) {
    struct collected *c = user;
    c->n_events++;
    if (part == TY_PART_REASONING) ty__buf_append(&c->reasoning, text, n);
    if (part == TY_PART_CONTENT) ty__buf_append(&c->content, text, n);
    if (part == TY_PART_TOOL_CALL && c->n_tools < 4) {
        CHECK(idx == c->n_tools);
        snprintf(c->tools[c->n_tools++], 256, "%.*s", (int)n, text);
    }
}

/* Feeds `text` in pieces of `step` bytes. */
static void split(const char *text, size_t step, bool reasoning, bool tools, struct collected *c) {
    memset(c, 0, sizeof *c);
    struct ty_stream_parser p;
    ty__stream_parser_init(&p, reasoning, tools);
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        ty__stream_parser_feed(&p, text + i, k, false, collect, c);
    }
    ty__stream_parser_feed(&p, "", 0, true, collect, c);
    ty__stream_parser_free(&p);
}

static void free_collected(struct collected *c) {
    ty__buf_free(&c->reasoning);
    ty__buf_free(&c->content);
}

static void test_stream_split(void) {
    const char *text = "<think>\nI should call the tool.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": "
                       "\"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": "
                       "\"now\", \"arguments\": {}}\n</tool_call>";
    for (size_t step = 1; step <= 9; step += 4) {
        struct collected c;
        split(text, step, true, true, &c);
        CHECK_MSG(c.reasoning.data && !strcmp(c.reasoning.data, "I should call the tool."), "step %zu: '%s'", step,
                  c.reasoning.data ? c.reasoning.data : "(null)");
        CHECK_MSG(c.content.data && !strcmp(c.content.data, "Let me check."), "step %zu: '%s'", step,
                  c.content.data ? c.content.data : "(null)");
        CHECK(c.n_tools == 2);
        json_t *t0 = json_loads(c.tools[0], 0, NULL), *t1 = json_loads(c.tools[1], 0, NULL);
        json_t *fn0 = json_object_get(t0, "function");
        CHECK(!strcmp(json_string_value(json_object_get(fn0, "name")), "get_weather"));
        CHECK(!strcmp(json_string_value(json_object_get(fn0, "arguments")), "{\"city\": \"Paris\"}"));
        CHECK(!strcmp(json_string_value(json_object_get(t0, "id")), "call_0"));
        CHECK(!strcmp(json_string_value(json_object_get(t1, "id")), "call_1"));
        CHECK(!strcmp(json_string_value(json_object_get(t0, "type")), "function"));
        json_decref(t0);
        json_decref(t1);
        /* a one-byte feed streams: text is emitted before the end, not all at once */
        if (step == 1) CHECK(c.n_events > 10);
        free_collected(&c);
    }
    /* no tools requested: the block is plain content; no reasoning parse: <think> is content too */
    struct collected c;
    split("a<tool_call>{\"name\":\"f\"}</tool_call>", 3, true, false, &c);
    CHECK(c.n_tools == 0 && !strcmp(c.content.data, "a<tool_call>{\"name\":\"f\"}</tool_call>"));
    free_collected(&c);
    split("<think>x</think>y", 2, false, false, &c);
    CHECK(!c.reasoning.data && !strcmp(c.content.data, "<think>x</think>y"));
    free_collected(&c);
    /* a tag cut off at the end and a malformed call stay visible as content */
    split("hello <tool_", 1, true, true, &c);
    CHECK(!strcmp(c.content.data, "hello <tool_"));
    free_collected(&c);
    split("x<tool_call>not json</tool_call>", 1, true, true, &c);
    CHECK(c.n_tools == 0 && strstr(c.content.data, "not json"));
    free_collected(&c);
    /* a "<" that does not begin a tag is released without waiting for the end */
    split("<think>a < b</think>ok", 1, true, true, &c);
    CHECK(!strcmp(c.reasoning.data, "a < b") && !strcmp(c.content.data, "ok"));
    free_collected(&c);
}

/* ==== Ledger ==== */

static void test_ledger(void) {
    const char *path = ty_test_tmp("ledger.db");
    unlink(path);
    struct ty_ledger *l;
    CHECK_OK(ty__ledger_open(path, &l));
    CHECK_OK(ty__ledger_add(l, "alice", 10, 5, false));
    CHECK_OK(ty__ledger_add(l, "alice", 1, 2, true));
    CHECK_OK(ty__ledger_add(l, "bob", 3, 0, false));
    ty__ledger_close(l);
    CHECK_OK(ty__ledger_open(path, &l)); /* persists */
    const char *out = ty_test_tmp("ledger.out");
    FILE *f = fopen(out, "w");
    CHECK_OK(ty__ledger_report(l, NULL, true, f));
    fclose(f);
    ty__ledger_close(l);
    char *text = NULL;
    size_t n;
    CHECK_OK(ty__file_read(out, 1 << 20, &text, &n));
    CHECK(text && strstr(text, "\"key\":\"alice\"") && strstr(text, "\"requests\":2") &&
          strstr(text, "\"prompt_tokens\":11") && strstr(text, "\"completion_tokens\":7") &&
          strstr(text, "\"errors\":1"));
    CHECK(text && strstr(text, "\"key\":\"bob\""));
    ty_free(text);
}

void ty_tests(void) {
    TY_RUN(test_blocks_admit_release);
    TY_RUN(test_blocks_cow);
    TY_RUN(test_blocks_prefix_cache);
    TY_RUN(test_block_hash);
    TY_RUN(test_keys);
    TY_RUN(test_parser_accepts);
    TY_RUN(test_parser_rejects);
    TY_RUN(test_stream_split);
    TY_RUN(test_ledger);
}
