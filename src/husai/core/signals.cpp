#include "husai/core/signals.hpp"

#include <unistd.h>
#include <csignal>

namespace husai {
namespace {

volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop) _exit(128 + sig);
  g_stop = 1;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() {
  return g_stop != 0;
}

void clear_stop_request() {
  g_stop = 0;
}

}  // namespace husai
