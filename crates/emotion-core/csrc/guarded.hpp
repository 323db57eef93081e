// Runs a shim's body with C++ exceptions turned into an error message for the caller's buffer: no
// exception crosses the C boundary into Rust. Shared by the core's shims and the Gloo shim.
#pragma once
#include <cstdio>
#include <exception>

namespace emotion {
inline void report(char* error, int error_len, const char* what) {
  if (error != nullptr && error_len > 0) std::snprintf(error, error_len, "%s", what);
}

// 0 when `body` returned, -1 (with the message in `error`) when it threw.
template <typename F>
int guarded(char* error, int error_len, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    report(error, error_len, e.what());
  } catch (...) {
    report(error, error_len, "unknown C++ exception");
  }
  return -1;
}
}  // namespace emotion
