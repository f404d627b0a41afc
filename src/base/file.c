/*
 * file.c - read-only file mapping for weights and bounded whole-file reads for small text files (configs, JSON).
 */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum ty_status ty__file_map(const char *path, struct ty_file_map *out) {
    memset(out, 0, sizeof *out);
    out->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ty__error(TY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ty__error(TY_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ty__error(TY_ERR_IO, "%s: not a regular file", path);
    }
    out->fd = fd;
    out->size = (size_t)st.st_size;
    if (out->size == 0) return TY_OK;
    void *p = mmap(NULL, out->size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        out->fd = -1;
        return ty__error(TY_ERR_IO, "%s: cannot map %zu bytes: %s", path, out->size, strerror(e));
    }
    out->data = p;
    return TY_OK;
}

void ty__file_unmap(struct ty_file_map *m) {
    if (m->data) munmap((void *)m->data, m->size);
    if (m->fd >= 0) close(m->fd);
    m->data = NULL;
    m->size = 0;
    m->fd = -1;
}

enum ty_status ty__file_read(const char *path, size_t max_size, char **out, size_t *size_out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ty__error(TY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct ty_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > max_size) {
            fclose(f);
            ty__buf_free(&b);
            return ty__error(TY_ERR_FORMAT, "%s: larger than the %zu-byte limit for this kind of file", path, max_size);
        }
        ty__buf_append(&b, chunk, n);
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        ty__buf_free(&b);
        return ty__error(TY_ERR_IO, "%s: read error", path);
    }
    if (!b.data) ty__buf_append(&b, "", 0);
    size_t len = b.len;
    TY_TRY(ty__buf_finish(&b, out));
    if (size_out) *size_out = len;
    return TY_OK;
}
