/*
 * test_murmur2.c - qm_murmur2 is Kafka's partitioner hash: the test vectors
 * of Kafka's own UtilsTest, and every tail length.
 */
#include "check.h"

#include <string.h>

static void kafka_test_vectors(void) {
    static const struct { const char *key; int32_t expected; } v[] = {
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"a-little-bit-longer-string", -1486304829},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
        {"abc", 479470107},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        CHECK((int32_t)qm_murmur2(v[i].key, strlen(v[i].key)) == v[i].expected);
}

static void every_byte_counts_whatever_the_tail(void) {
    unsigned char buf[16] = {0};
    for (size_t n = 1; n <= sizeof buf; n++) {
        uint32_t before = qm_murmur2(buf, n);
        buf[n - 1] ^= 1;
        CHECK(qm_murmur2(buf, n) != before);
        buf[n - 1] ^= 1;
        CHECK(qm_murmur2(buf, n) == before);
        CHECK(qm_murmur2(buf, n) != qm_murmur2(buf, n - 1));
    }
}

int main(void) {
    RUN(kafka_test_vectors);
    RUN(every_byte_counts_whatever_the_tail);
    CHECK_EXIT();
}
