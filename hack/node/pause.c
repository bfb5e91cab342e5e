/*
 * The node's pod sandbox ("pause") process: holds the pod's namespaces, reaps orphaned children (it is
 * PID 1 of pods that share their process namespace) and exits on SIGTERM or SIGINT.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
  struct sigaction on_quit = {.sa_handler = quit}, on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &on_quit, NULL);
  sigaction(SIGTERM, &on_quit, NULL);
  sigaction(SIGCHLD, &on_child, NULL);
  for (;;) pause();
}
