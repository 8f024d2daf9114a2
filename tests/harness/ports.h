// Loopback port helpers for integration tests: pick free ports, wait for listeners, read port files.
// Ownership: nothing is owned; every function opens and closes its own sockets/files.
// Thread-safety: all functions are reentrant and may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sanigate::test {

// Returns a port on 127.0.0.1 that was free a moment ago. There is an unavoidable race until
// the real server binds it, so callers that can detect a bind failure should retry with a new port.
uint16_t FreeTcpPort();

// A socket listening on 127.0.0.1 at a free port, from which nobody accepts: the kernel completes
// up to `backlog` TCP handshakes and nothing ever answers (a hung server), and nobody else can
// bind the port meanwhile. Returns the descriptor (the caller closes it) and sets *port. Throws
// std::runtime_error on failure.
int ListenOnLoopback(uint16_t* port, int backlog = 8);

// Polls with connect() to 127.0.0.1:port until a listener accepts or the timeout expires.
bool WaitForTcpPort(uint16_t port, std::chrono::milliseconds timeout);

// Waits until `path` exists and holds at least `expected` complete ('\n'-terminated) lines,
// then returns the port of every complete line (the trailing number on the line, so both
// "15020" and "modbus=15020" work). Throws std::runtime_error on timeout or a malformed line.
std::vector<uint16_t> ReadPortFile(const std::string& path, std::size_t expected,
                                   std::chrono::milliseconds timeout);

}  // namespace sanigate::test
