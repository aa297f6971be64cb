/*
 * Fuzz targets for every parser of untrusted bytes (STYLE.md 9). Each tests/fuzz/fuzz_<name>.c
 * defines LLVMFuzzerTestOneInput; `make fuzz` links it with libFuzzer (clang), and `make test`
 * replays its corpus (tests/fuzz/corpus/<name>/) through replay.c under ASan and UBSan. A target
 * may include a .c file to reach its statics. Properties a target checks beyond "no crash" end
 * in FUZZ_CHECK, which aborts so that both drivers report the input.
 */
#ifndef LL_FUZZ_H
#define LL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(e)                                                                              \
    do {                                                                                           \
        if (!(e)) {                                                                                \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #e);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
