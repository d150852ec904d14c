/* crc32c_test.c: the tests of crc32c.c: the hardware CRC-32C against the
 * table-driven one. */
#include "core_test.h"

uint32_t bk_crc32c_soft(uint32_t crc, const void *data, size_t len);

static void test_crc32c(void)
{
    CHECK(bk_crc32c(0, "123456789", 9) == 0xE3069283u);
    CHECK(bk_crc32c_soft(0, "123456789", 9) == 0xE3069283u);
    CHECK(bk_crc32c(0, "", 0) == 0);
    CHECK(bk_crc32c(0x12345678u, NULL, 0) == 0x12345678u);
    /* chaining */
    CHECK(bk_crc32c(bk_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
    unsigned char buf[256];
    int bad = 0;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (unsigned char)rnd();
        uint32_t seed = round % 2 ? (uint32_t)rnd() : 0;
        for (size_t off = 0; off < 8; off++)
            for (size_t len = 0; len <= 100; len++) {
                uint32_t a = bk_crc32c(seed, buf + off * 3 + 1, len);
                bad += a != bk_crc32c_soft(seed, buf + off * 3 + 1, len);
                if (len > 10) {
                    uint32_t c = bk_crc32c(bk_crc32c(seed, buf + off * 3 + 1, 7),
                                           buf + off * 3 + 8, len - 7);
                    bad += c != a;
                }
            }
    }
    CHECK(bad == 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_crc32c();
    return t_done();
}
