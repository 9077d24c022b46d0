#pragma once

namespace husai {

// SIGINT/SIGTERM set a flag that long loops poll at step boundaries, so they can write a checkpoint
// and stop cleanly. A second signal while the first is pending ends the process at once.
void install_stop_handlers();
bool stop_requested();
void clear_stop_request();

}  // namespace husai
