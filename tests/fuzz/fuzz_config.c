/*
 * ll_config_load of a YAML file. The file is the operator's, not a client's, so this guards
 * against crashes and leaks on a typo, not against an attacker. The input goes through a
 * memfd so that every run reads a fresh file without touching the disk.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "fuzz.h"
#include "leadloop/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    static ll_config_t c;
    char err[512];
    if (fd < 0) {
        fd = memfd_create("ll-fuzz-config", 0);
        FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size);
    memset(&c, 0, sizeof(c));
    ll_config_defaults(&c);
    if (ll_config_load(&c, path, err, sizeof(err)) != 0)
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
    ll_config_free(&c);
    return 0;
}
