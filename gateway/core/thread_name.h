// Names the calling thread (at most 15 characters are kept), so `top -H`, perf and the
// benchmarks' per-thread wake-up lists say which part of the gateway a thread is.
#pragma once

#include <pthread.h>

#include <string>

namespace sanigate {

inline void NameThisThread(const std::string& name) {
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace sanigate
