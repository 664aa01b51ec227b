/*
 * pytest-qemu's command agent: runs the host's commands in the guest.
 *
 * It speaks length-prefixed frames (see pytest_qemu/channels/framing.py, the
 * host side, for the layout) on a virtio-serial port named
 * org.pytest-qemu.agent. One event loop serves the port, the running command's
 * pipes and its exit, so the agent answers pings while a command runs, streams
 * output as it comes, and never holds a command's output in memory.
 *
 * Every descriptor of the agent is close-on-exec: a command, or a process it
 * leaves behind, never holds the port open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PORT_NAME "org.pytest-qemu.agent"
#define SETUP_STATUS "/run/pytest-qemu/setup.status"
#define MAGIC 0x67415150u /* "PQAg" little-endian */
#define HEADER_SIZE 16
#define MAX_PAYLOAD (1u << 20)
#define CHUNK (64 * 1024)
#define MAX_ORPHANS 64

enum {
    /* host -> guest */
    T_PING = 1, T_RUN = 2, T_STDIN = 3, T_KILL = 4, T_PUT = 5, T_GET = 6, T_DATA = 7,
    T_KLOG = 8,
    /* guest -> host */
    T_READY = 64, T_PONG = 65, T_STDOUT = 66, T_STDERR = 67, T_EXIT = 68, T_ERROR = 69,
    T_FILE = 70, T_DONE = 71,
};

static int port = -1;
static char setup_status[16] = "-";

/* The one command that may run at a time. */
static struct {
    uint32_t id;
    pid_t pid;          /* 0 once reaped */
    int in, out, err;   /* -1 once closed */
    int status;         /* exit code, or -signal */
    int timed_out;
    int64_t deadline;   /* monotonic ms; 0: none */
    char *pending;      /* stdin bytes not yet written */
    size_t pending_len, pending_off;
    int stdin_eof;      /* the host sent all of stdin */
    int active;
} cmd;

/* Pipes of finished commands that background processes still write to: drained, dropped. */
static int orphans[MAX_ORPHANS];
static int n_orphans;

/* A file the host is sending. */
static struct {
    uint32_t id;
    int fd;
    char path[PATH_MAX];
    char tmp[PATH_MAX + 32];
    int failed;
    char error[PATH_MAX + 256];
} put = {.fd = -1};

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

static uint32_t get32(const unsigned char *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t header_check(const unsigned char *h) {
    /* Over type, id and length: a stray "PQAg" in a payload is not taken for a header. */
    uint32_t sum = 0x5a5a;
    for (int i = 4; i < 6; i++) sum = sum * 31 + h[i];
    for (int i = 8; i < 16; i++) sum = sum * 31 + h[i];
    return (uint16_t)(sum ^ (sum >> 16));
}

static void die(const char *what) {
    fprintf(stderr, "pytest-qemu agent: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static void write_all(const struct iovec *iov_in, int count) {
    struct iovec iov[3];
    memcpy(iov, iov_in, sizeof(struct iovec) * count);
    int first = 0;
    while (first < count) {
        ssize_t n = writev(port, iov + first, count - first);
        if (n < 0) {
            if (errno == EINTR) continue;
            /* The host is not connected (yet, or any more): wait for it. */
            if (errno == EAGAIN || errno == EPIPE || errno == ENODEV) {
                usleep(10000);
                continue;
            }
            die("write to port");
        }
        while (first < count && (size_t)n >= iov[first].iov_len) {
            n -= iov[first].iov_len;
            first++;
        }
        if (first < count) {
            iov[first].iov_base = (char *)iov[first].iov_base + n;
            iov[first].iov_len -= n;
        }
    }
}

static void send_frame2(int type, uint32_t id, const void *a, size_t a_len, const void *b,
                        size_t b_len) {
    unsigned char h[HEADER_SIZE];
    put32(h, MAGIC);
    h[4] = type;
    h[5] = 0;
    put32(h + 8, id);
    put32(h + 12, (uint32_t)(a_len + b_len));
    uint16_t check = header_check(h);
    h[6] = check & 0xff;
    h[7] = check >> 8;
    struct iovec iov[3] = {{h, HEADER_SIZE}, {(void *)a, a_len}, {(void *)b, b_len}};
    write_all(iov, 3);
}

static void send_frame(int type, uint32_t id, const void *data, size_t len) {
    send_frame2(type, id, data, len, NULL, 0);
}

static void send_error(uint32_t id, const char *fmt, const char *arg) {
    char message[512];
    snprintf(message, sizeof message, fmt, arg, strerror(errno));
    send_frame(T_ERROR, id, message, strlen(message));
}

/* READY and PONG carry the boot-time setup status, then (after a NUL) the requests
   beyond the first version's that this agent answers, so that a newer host can
   tell an older agent from a slow one. */
#define FEATURES "klog"

static void send_hello(int type, uint32_t id) {
    char payload[sizeof setup_status + sizeof FEATURES];
    size_t status_len = strlen(setup_status);
    memcpy(payload, setup_status, status_len);
    payload[status_len] = 0;
    memcpy(payload + status_len + 1, FEATURES, sizeof FEATURES - 1);
    send_frame(type, id, payload, status_len + sizeof FEATURES);
}

static void read_setup_status(void) {
    int fd = open(SETUP_STATUS, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, setup_status, sizeof setup_status - 1);
    close(fd);
    if (n <= 0) {
        strcpy(setup_status, "-");
        return;
    }
    setup_status[n] = 0;
    setup_status[strcspn(setup_status, "\n")] = 0;
}

/* open_port's failures: no virtio-serial port at all, or ports but none named ours. */
#define NO_PORTS (-2)
#define NO_PORT_OF_OURS (-1)

static int open_port(void) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return NO_PORTS;
    struct dirent *entry;
    int fd = NO_PORTS;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        fd = NO_PORT_OF_OURS;
        char path[PATH_MAX], name[128] = "";
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
        int nfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nfd < 0) continue;
        ssize_t n = read(nfd, name, sizeof name - 1);
        close(nfd);
        if (n <= 0) continue;
        name[n] = 0;
        name[strcspn(name, "\n")] = 0;
        if (strcmp(name, PORT_NAME) == 0) {
            snprintf(path, sizeof path, "/dev/%s", entry->d_name);
            fd = open(path, O_RDWR | O_CLOEXEC);
            if (fd < 0) fd = NO_PORT_OF_OURS;
            break;
        }
    }
    closedir(dir);
    return fd;
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void close_fd(int *fd) {
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void add_orphan(int *fd) {
    if (*fd < 0) return;
    if (n_orphans == MAX_ORPHANS) {
        close(orphans[0]);
        memmove(orphans, orphans + 1, sizeof(int) * (MAX_ORPHANS - 1));
        n_orphans--;
    }
    orphans[n_orphans++] = *fd;
    *fd = -1;
}

/* Read what a command's pipe has now; forward it. Returns 0 at end of file. */
static int forward(int fd, int type) {
    static char buffer[CHUNK];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n > 0) {
            send_frame(type, cmd.id, buffer, n);
            if (n < (ssize_t)sizeof buffer) return 1;
            continue;
        }
        if (n == 0) return 0;
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 1 : 0;
    }
}

static void finish_command(void) {
    /* What the command wrote before it exited is in the pipes already. */
    if (cmd.out >= 0 && !forward(cmd.out, T_STDOUT)) close_fd(&cmd.out);
    if (cmd.err >= 0 && !forward(cmd.err, T_STDERR)) close_fd(&cmd.err);
    add_orphan(&cmd.out);
    add_orphan(&cmd.err);
    close_fd(&cmd.in);
    free(cmd.pending);
    cmd.pending = NULL;
    unsigned char payload[8];
    put32(payload, (uint32_t)cmd.status);
    put32(payload + 4, cmd.timed_out ? 1 : 0);
    send_frame(T_EXIT, cmd.id, payload, sizeof payload);
    cmd.active = 0;
}

/*
 * Every command runs as `eval "$command"` in a shell of its own, not as `sh -c command`:
 * so the agent can start that shell before the command arrives. Under emulation,
 * starting a shell (execve, the C library's and the shell's start-up) costs more than
 * most commands, and QEMU translates that code afresh in every clone of a template.
 * The agent starts one such *spare* shell right after it announces itself, and answers
 * nothing until it waits; the host pings once more before it saves a template, so a
 * template holds it waiting, and a clone's first command (in the default root,
 * directory and environment) finds it ready: the clone pays for the command only.
 * Other commands start their shell on demand, with the command in its environment.
 * Both run the same eval, so a command sees no difference between the two.
 */
#define COMMAND_VARIABLE "__pytest_qemu_command"
#define EVAL_COMMAND "eval \"unset " COMMAND_VARIABLE "; $" COMMAND_VARIABLE "\""
/* Fd 4 closed: the spare is about to wait. Its command ends with a NUL, read from fd 3. */
#define SPARE_SCRIPT \
    "exec 4>&-; IFS= read -r -d '' " COMMAND_VARIABLE " <&3; exec 3<&-; " EVAL_COMMAND
/* The shell reads the text byte by byte; and under PIPE_BUF, writing it never blocks. */
#define SPARE_MAX_TEXT 4000

static struct {
    pid_t pid;
    int in, out, err, text;
} spare = {0, -1, -1, -1, -1};

/* A pipe whose ends are numbered 10 and up, clear of the 0-4 a child's dup2s target. */
static int pipe_high(int ends[2]) {
    int raw[2];
    if (pipe2(raw, O_CLOEXEC) < 0) return -1;
    ends[0] = fcntl(raw[0], F_DUPFD_CLOEXEC, 10);
    ends[1] = fcntl(raw[1], F_DUPFD_CLOEXEC, 10);
    close(raw[0]);
    close(raw[1]);
    if (ends[0] >= 0 && ends[1] >= 0) return 0;
    if (ends[0] >= 0) close(ends[0]);
    if (ends[1] >= 0) close(ends[1]);
    return -1;
}

static void close_pipes(int pipes[][2], int count) {
    for (int i = 0; i < count; i++) {
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
}

static void start_spare(void) {
    int pipes[5][2]; /* stdin, stdout, stderr, the command's text, readiness */
    for (int made = 0; made < 5; made++) {
        if (pipe_high(pipes[made]) < 0) { /* no spare: every command starts its own shell */
            close_pipes(pipes, made);
            return;
        }
    }
    char *const argv[] = {"sh", "-c", SPARE_SCRIPT, NULL};
    sigset_t none;
    sigemptyset(&none);
    pid_t pid = vfork();
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        dup2(pipes[0][0], 0);
        dup2(pipes[1][1], 1);
        dup2(pipes[2][1], 2);
        dup2(pipes[3][0], 3);
        dup2(pipes[4][1], 4);
        execve("/bin/sh", argv, environ);
        _exit(127);
    }
    if (pid < 0) {
        close_pipes(pipes, 5);
        return;
    }
    close(pipes[0][0]);
    close(pipes[1][1]);
    close(pipes[2][1]);
    close(pipes[3][0]);
    close(pipes[4][1]);
    /* Wait until it waits: a template saved now holds a shell that has started. */
    struct pollfd ready = {.fd = pipes[4][0], .events = POLLIN};
    while (poll(&ready, 1, 10000) < 0 && errno == EINTR) {
    }
    close(pipes[4][0]);
    set_nonblock(pipes[0][1]);
    set_nonblock(pipes[1][0]);
    set_nonblock(pipes[2][0]);
    spare.pid = pid;
    spare.in = pipes[0][1];
    spare.out = pipes[1][0];
    spare.err = pipes[2][0];
    spare.text = pipes[3][1];
}

static void drop_spare(void) {
    spare.pid = 0;
    close_fd(&spare.in);
    close_fd(&spare.out);
    close_fd(&spare.err);
    close_fd(&spare.text);
}

/* Hand the command to the spare shell; 0 if it cannot take it (then start a shell). */
static int use_spare(uint32_t id, const char *command, int64_t deadline) {
    size_t length = strlen(command) + 1; /* with its NUL: the end of the text */
    if (spare.pid <= 0 || length > SPARE_MAX_TEXT) return 0;
    ssize_t written = write(spare.text, command, length);
    close_fd(&spare.text);
    if (written != (ssize_t)length) { /* it died: the reaper has or will let it go */
        kill(-spare.pid, SIGKILL);
        return 0;
    }
    memset(&cmd, 0, sizeof cmd);
    cmd.id = id;
    cmd.pid = spare.pid;
    cmd.in = spare.in;
    cmd.out = spare.out;
    cmd.err = spare.err;
    cmd.deadline = deadline;
    cmd.active = 1;
    spare.pid = 0;
    spare.in = spare.out = spare.err = -1;
    return 1;
}

static void start_command(uint32_t id, const unsigned char *payload, uint32_t len) {
    if (cmd.active) {
        errno = EBUSY;
        send_error(id, "%sanother command is running: %s", "");
        return;
    }
    if (len < 8) {
        errno = EINVAL;
        send_error(id, "%sa malformed RUN request: %s", "");
        return;
    }
    uint32_t timeout_ms = get32(payload);
    /* Then NUL-terminated strings: root, working directory, command, NAME=VALUE... */
    const char *strings = (const char *)payload + 8;
    const char *end = (const char *)payload + len;
    if (end[-1] != 0 && len > 8) {
        errno = EINVAL;
        send_error(id, "%sa malformed RUN request: %s", "");
        return;
    }
    const char *root = strings;
    const char *cwd = root + strlen(root) + 1;
    const char *command = cwd + strlen(cwd) + 1;
    if (command >= end) {
        errno = EINVAL;
        send_error(id, "%sa RUN request without a command: %s", "");
        return;
    }
    const char *environment = command + strlen(command) + 1;
    int64_t deadline = timeout_ms ? now_ms() + timeout_ms : 0;
    if (!*root && !*cwd && environment >= end && use_spare(id, command, deadline)) return;
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        send_error(id, "%scannot create pipes: %s", "");
        return;
    }
    /* The environment is built here: a vfork child must not touch the agent's memory. */
    size_t count = 1;
    for (char **variable = environ; *variable; variable++) count++;
    for (const char *v = environment; v < end; v += strlen(v) + 1) count++;
    char **envp = malloc(sizeof(char *) * (count + 1));
    size_t command_length = strlen(command);
    char *command_variable = malloc(sizeof COMMAND_VARIABLE + command_length + 1);
    if (!envp || !command_variable) die("malloc");
    /* Copied, not sprintf-ed: gcc warns of a format overflow on 32-bit targets. */
    memcpy(command_variable, COMMAND_VARIABLE "=", sizeof COMMAND_VARIABLE);
    memcpy(command_variable + sizeof COMMAND_VARIABLE, command, command_length + 1);
    size_t n_env = 0;
    for (char **variable = environ; *variable; variable++) {
        int overridden = 0;
        size_t name_len = strcspn(*variable, "=");
        for (const char *v = environment; v < end; v += strlen(v) + 1)
            if (strncmp(v, *variable, name_len + 1) == 0) overridden = 1;
        if (!overridden) envp[n_env++] = *variable;
    }
    for (const char *v = environment; v < end; v += strlen(v) + 1)
        envp[n_env++] = (char *)v;
    envp[n_env++] = command_variable;
    envp[n_env] = NULL;
    char *const argv[] = {"sh", "-c", EVAL_COMMAND, NULL};
    sigset_t none;
    sigemptyset(&none);
    /* vfork: under emulation, copying the agent's page tables for fork costs more than
       the command it starts. */
    pid_t pid = vfork();
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        /* Its own session and process group: a timeout kills everything it started. */
        setsid();
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        if (*root && (chroot(root) < 0 || (!*cwd && chdir("/") < 0))) {
            dprintf(2, "pytest-qemu: cannot change the root to %s: %s\n", root, strerror(errno));
            _exit(126);
        }
        if (*cwd && chdir(cwd) < 0) {
            dprintf(2, "pytest-qemu: cannot change to directory %s: %s\n", cwd, strerror(errno));
            _exit(126);
        }
        execve("/bin/sh", argv, envp);
        dprintf(2, "pytest-qemu: cannot run /bin/sh: %s\n", strerror(errno));
        _exit(127);
    }
    free(envp);
    free(command_variable);
    if (pid < 0) {
        send_error(id, "%scannot start a process: %s", "");
        close(in[0]); close(in[1]); close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        return;
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    set_nonblock(in[1]);
    set_nonblock(out[0]);
    set_nonblock(err[0]);
    memset(&cmd, 0, sizeof cmd);
    cmd.id = id;
    cmd.pid = pid;
    cmd.in = in[1];
    cmd.out = out[0];
    cmd.err = err[0];
    cmd.deadline = deadline;
    cmd.active = 1;
}

static void flush_stdin(void) {
    while (cmd.in >= 0 && cmd.pending_off < cmd.pending_len) {
        ssize_t n = write(cmd.in, cmd.pending + cmd.pending_off, cmd.pending_len - cmd.pending_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            /* The command does not read its input (EPIPE): drop the rest. */
            close_fd(&cmd.in);
            break;
        }
        cmd.pending_off += n;
    }
    if (cmd.pending_off >= cmd.pending_len) {
        free(cmd.pending);
        cmd.pending = NULL;
        cmd.pending_len = cmd.pending_off = 0;
        if (cmd.stdin_eof) close_fd(&cmd.in);
    }
}

static void add_stdin(uint32_t id, const unsigned char *data, uint32_t len) {
    if (!cmd.active || id != cmd.id) return;
    if (len == 0) {
        cmd.stdin_eof = 1;
    } else if (cmd.in >= 0) {
        char *grown = realloc(cmd.pending, cmd.pending_len + len);
        if (!grown) die("realloc");
        memcpy(grown + cmd.pending_len, data, len);
        cmd.pending = grown;
        cmd.pending_len += len;
    }
    flush_stdin();
}

static void put_begin(uint32_t id, const unsigned char *payload, uint32_t len) {
    if (put.fd >= 0) {
        close(put.fd);
        unlink(put.tmp);
    }
    put.fd = -1;
    put.id = id;
    put.failed = 0;
    if (len < 5 || payload[len - 1] != 0 || len - 4 >= sizeof put.path) {
        put.failed = 1;
        snprintf(put.error, sizeof put.error, "a malformed PUT request");
        return;
    }
    mode_t mode = get32(payload) & 07777;
    snprintf(put.path, sizeof put.path, "%s", (const char *)payload + 4);
    snprintf(put.tmp, sizeof put.tmp, "%s.pytest-qemu-%u", put.path, id);
    put.fd = open(put.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (put.fd < 0 || fchmod(put.fd, mode) < 0) {
        put.failed = 1;
        snprintf(put.error, sizeof put.error, "cannot create %s: %s", put.path, strerror(errno));
        close_fd(&put.fd);
    }
}

static void put_data(uint32_t id, const unsigned char *data, uint32_t len) {
    if (id != put.id) return;
    if (len > 0) {
        if (put.failed) return;
        for (uint32_t done = 0; done < len;) {
            ssize_t n = write(put.fd, data + done, len - done);
            if (n < 0) {
                if (errno == EINTR) continue;
                put.failed = 1;
                snprintf(put.error, sizeof put.error, "cannot write %s: %s", put.path,
                         strerror(errno));
                close_fd(&put.fd);
                unlink(put.tmp);
                return;
            }
            done += n;
        }
        return;
    }
    /* End of the file. */
    if (!put.failed) {
        if (close(put.fd) < 0 || rename(put.tmp, put.path) < 0) {
            put.failed = 1;
            snprintf(put.error, sizeof put.error, "cannot write %s: %s", put.path,
                     strerror(errno));
            unlink(put.tmp);
        }
        put.fd = -1;
    }
    if (put.failed)
        send_frame(T_ERROR, id, put.error, strlen(put.error));
    else
        send_frame(T_DONE, id, NULL, 0);
    put.id = 0;
}

static void get_file(uint32_t id, const unsigned char *payload, uint32_t len) {
    if (len == 0 || payload[len - 1] != 0) {
        errno = EINVAL;
        send_error(id, "%sa malformed GET request: %s", "");
        return;
    }
    const char *path = (const char *)payload;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        send_error(id, "cannot open %s: %s", path);
        if (fd >= 0) close(fd);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        send_error(id, "cannot read %s: %s", path);
        close(fd);
        return;
    }
    unsigned char header[4];
    put32(header, st.st_mode & 07777);
    send_frame(T_FILE, id, header, sizeof header);
    static char buffer[CHUNK];
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            send_error(id, "cannot read %s: %s", path);
            close(fd);
            return;
        }
        if (n == 0) break;
        send_frame(T_DATA, id, buffer, n);
    }
    close(fd);
    send_frame(T_DATA, id, NULL, 0);
}

/* The kernel log, answered like GET (FILE, DATA frames, an empty DATA): read with
   syslog(2) instead of running dmesg, it costs the guest no new process. */
static void send_kernel_log(uint32_t id) {
    int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
    char *log = size > 0 ? malloc(size) : NULL;
    int n = log ? klogctl(3 /* SYSLOG_ACTION_READ_ALL */, log, size) : -1;
    if (n < 0) {
        send_error(id, "cannot read the kernel log%s: %s", "");
        free(log);
        return;
    }
    unsigned char header[4];
    put32(header, 0);
    send_frame(T_FILE, id, header, sizeof header);
    for (int offset = 0; offset < n; offset += CHUNK) {
        send_frame(T_DATA, id, log + offset, n - offset < CHUNK ? n - offset : CHUNK);
    }
    send_frame(T_DATA, id, NULL, 0);
    free(log);
}

static void handle(int type, uint32_t id, const unsigned char *payload, uint32_t len) {
    switch (type) {
    case T_PING:
        /* A ping after a restore carries the host's clock and fresh entropy: the
           restored guest is personalised before it answers. */
        if (len >= 8) {
            uint64_t ns = get32(payload) | (uint64_t)get32(payload + 4) << 32;
            struct timespec now = {.tv_sec = ns / 1000000000u, .tv_nsec = ns % 1000000000u};
            clock_settime(CLOCK_REALTIME, &now);
            int random = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
            if (random >= 0) {
                if (write(random, payload + 8, len - 8) < 0) { /* mixing is best effort */ }
                close(random);
            }
        }
        send_hello(T_PONG, id);
        break;
    case T_RUN:
        start_command(id, payload, len);
        break;
    case T_STDIN:
        add_stdin(id, payload, len);
        break;
    case T_KILL:
        if (cmd.active && cmd.id == id && cmd.pid > 0) kill(-cmd.pid, SIGKILL);
        break;
    case T_PUT:
        put_begin(id, payload, len);
        break;
    case T_DATA:
        put_data(id, payload, len);
        break;
    case T_GET:
        get_file(id, payload, len);
        break;
    case T_KLOG:
        send_kernel_log(id);
        break;
    default:
        errno = ENOSYS; /* a newer host: it falls back to what older agents have */
        send_error(id, "%sunknown request: %s", "");
        break;
    }
}

/* Input from the port: frames, after skipping any bytes before the first good header. */
static unsigned char *in_buffer;
static size_t in_len;

static void parse_input(void) {
    size_t offset = 0;
    while (in_len - offset >= HEADER_SIZE) {
        unsigned char *h = in_buffer + offset;
        uint32_t len = get32(h + 12);
        if (get32(h) != MAGIC || (h[6] | h[7] << 8) != header_check(h) || len > MAX_PAYLOAD) {
            /* Out of step (a host request cut short by an earlier agent's death): resync. */
            offset++;
            continue;
        }
        if (in_len - offset < HEADER_SIZE + len) break;
        handle(h[4], get32(h + 8), h + HEADER_SIZE, len);
        offset += HEADER_SIZE + len;
    }
    memmove(in_buffer, in_buffer + offset, in_len - offset);
    in_len -= offset;
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == spare.pid) drop_spare();
        if (cmd.active && pid == cmd.pid) {
            cmd.status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
            cmd.pid = 0;
        }
    }
}

int main(void) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    signal(SIGPIPE, SIG_IGN);
    read_setup_status();
    /* Commands run in the home directory unless they ask for another. */
    if (chdir("/root") < 0 && chdir("/") < 0) die("chdir");
    /* The port appears once virtio_console has probed; only one process may hold it. A VM
       reached through another channel has no such port: wait quietly. Say so once only
       where there are virtio-serial ports, but not ours: stderr is the serial console, and
       a VM reached through its console runs its commands there. */
    for (int tries = 0; (port = open_port()) < 0; tries++) {
        if (tries == 1000 && port == NO_PORT_OF_OURS)
            fprintf(stderr, "pytest-qemu agent: no virtio-serial port named " PORT_NAME
                            " (yet): waiting for it\n");
        usleep(tries < 1000 ? 10000 : 1000000);
    }
    in_buffer = malloc(HEADER_SIZE + MAX_PAYLOAD + CHUNK);
    if (!in_buffer) die("malloc");
    cmd.in = cmd.out = cmd.err = -1;
    /* Announce ourselves: a booting host learns at once that we are here. */
    send_hello(T_READY, 0);
    /* Then start the spare shell; pings are answered once it waits (see settle()). */
    start_spare();
    for (;;) {
        struct pollfd fds[5 + MAX_ORPHANS];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = port, .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        int out_at = -1, err_at = -1, in_at = -1;
        if (cmd.active) {
            if (cmd.out >= 0) {
                out_at = n;
                fds[n++] = (struct pollfd){.fd = cmd.out, .events = POLLIN};
            }
            if (cmd.err >= 0) {
                err_at = n;
                fds[n++] = (struct pollfd){.fd = cmd.err, .events = POLLIN};
            }
            if (cmd.in >= 0 && cmd.pending_len > cmd.pending_off) {
                in_at = n;
                fds[n++] = (struct pollfd){.fd = cmd.in, .events = POLLOUT};
            }
        }
        int orphans_at = n;
        for (int i = 0; i < n_orphans; i++)
            fds[n++] = (struct pollfd){.fd = orphans[i], .events = POLLIN};
        int timeout = -1;
        if (cmd.active && cmd.deadline && !cmd.timed_out) {
            int64_t left = cmd.deadline - now_ms();
            timeout = left < 0 ? 0 : (int)(left > INT_MAX ? INT_MAX : left);
        }
        if (poll(fds, n, timeout) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (cmd.active && cmd.deadline && !cmd.timed_out && now_ms() >= cmd.deadline) {
            cmd.timed_out = 1;
            if (cmd.pid > 0) kill(-cmd.pid, SIGKILL);
        }
        if (fds[1].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0) {
            }
            reap();
        }
        if (out_at >= 0 && fds[out_at].revents && !forward(cmd.out, T_STDOUT)) close_fd(&cmd.out);
        if (err_at >= 0 && fds[err_at].revents && !forward(cmd.err, T_STDERR)) close_fd(&cmd.err);
        if (in_at >= 0 && fds[in_at].revents) flush_stdin();
        for (int i = n_orphans - 1; i >= 0; i--) {
            if (!fds[orphans_at + i].revents) continue;
            static char sink[CHUNK];
            ssize_t got = read(orphans[i], sink, sizeof sink);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                close(orphans[i]);
                orphans[i] = orphans[--n_orphans];
            }
        }
        if (cmd.active && cmd.pid == 0) finish_command();
        if (fds[0].revents & POLLIN) {
            ssize_t got = read(port, in_buffer + in_len, HEADER_SIZE + MAX_PAYLOAD + CHUNK - in_len);
            if (got < 0 && errno != EINTR && errno != EAGAIN) die("read from port");
            if (got == 0) usleep(10000); /* the host is not connected */
            if (got > 0) {
                in_len += got;
                parse_input();
                if (in_len == HEADER_SIZE + MAX_PAYLOAD + CHUNK) in_len = 0;
            }
        } else if (fds[0].revents & (POLLHUP | POLLERR)) {
            /* The host is not connected: wait for it without spinning. */
            usleep(10000);
        }
    }
}
