/* The peer node's sandbox ("pause") process for bench/peer.sh: the same job as Kubernetes'
 * build/pause/linux/pause.c (holds the pod's namespaces, reaps zombies, exits on SIGINT/SIGTERM),
 * built here with `cc -Os -static` because no image may be pulled from outside. */
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void sigdown(int signo) {
    (void)signo;
    _exit(0);
}

static void sigreap(int signo) {
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction down = {.sa_handler = sigdown};
    struct sigaction reap = {.sa_handler = sigreap, .sa_flags = SA_NOCLDSTOP};
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not pid 1\n");
    if (sigaction(SIGINT, &down, NULL) < 0 || sigaction(SIGTERM, &down, NULL) < 0 ||
        sigaction(SIGCHLD, &reap, NULL) < 0)
        return 1;
    for (;;)
        pause();
}
