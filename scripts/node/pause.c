/*
 * The pod sandbox's process: holds the pod's namespaces, reaps the zombies
 * that land on it, and exits when told to. Built static (musl) into the
 * FROM-scratch pause image by scripts/node.sh, as Kubernetes builds its own
 * (build/pause/linux/pause.c) into registry.k8s.io/pause.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { _exit(0); }

static void on_child(int sig) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("ssegate pause");
    return 0;
  }
  if (getpid() != 1) fprintf(stderr, "pause: not pid 1\n");
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
