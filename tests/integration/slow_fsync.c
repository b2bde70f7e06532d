/* A slow disk for one directory, by LD_PRELOAD (tests/integration/test_slow_disk.py).
 *
 * fsync() and fdatasync() of a file descriptor whose file lies under $HAKEEPER_TEST_SLOW_FSYNC_DIR
 * (its path read from /proc/self/fd/N) sleep $HAKEEPER_TEST_SLOW_FSYNC_MS milliseconds, then call
 * the real function. Only while the file $HAKEEPER_TEST_SLOW_FSYNC_SWITCH exists, when that is set
 * (the test turns the slow disk on and off). Each delayed call appends "pid path" to
 * $HAKEEPER_TEST_SLOW_FSYNC_LOG, when set (outside the directory: that write is never synced).
 * SQLite (unix VFS) syncs with fdatasync(), or fsync() where there is no fdatasync; Python's
 * os.fsync() is fsync(). Other descriptors, and the process without these variables, are untouched.
 *
 *   gcc -shared -fPIC -O2 -o slow_fsync.so slow_fsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int under_slow_dir(int fd, char *path, size_t size) {
    const char *dir = getenv("HAKEEPER_TEST_SLOW_FSYNC_DIR");
    const char *on = getenv("HAKEEPER_TEST_SLOW_FSYNC_SWITCH");
    char link[64];
    ssize_t n;
    size_t len;

    if (dir == NULL || *dir == '\0') return 0;
    if (on != NULL && *on != '\0' && access(on, F_OK) != 0) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, size - 1);
    if (n < 0) return 0;
    path[n] = '\0';
    len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

static void slow_down(int fd) {
    char path[4096];
    const char *ms = getenv("HAKEEPER_TEST_SLOW_FSYNC_MS");
    const char *log = getenv("HAKEEPER_TEST_SLOW_FSYNC_LOG");
    int saved = errno;
    long delay;
    struct timespec ts;

    if (ms == NULL || !under_slow_dir(fd, path, sizeof path)) {
        errno = saved;
        return;
    }
    delay = strtol(ms, NULL, 10);
    if (log != NULL && *log != '\0') {
        int out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (out >= 0) {
            char line[4200];
            int len = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(), path);
            if (len > 0 && write(out, line, (size_t)len) < 0) { /* best effort */ }
            close(out);
        }
    }
    ts.tv_sec = delay / 1000;
    ts.tv_nsec = (delay % 1000) * 1000000L;
    while (delay > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    errno = saved;
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow_down(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow_down(fd);
    return real(fd);
}
