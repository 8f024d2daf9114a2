// The one way to include Boost.Asio. Boost 1.74's Asio uses std::exchange without including
// <utility>, which GCC 12 in C++20 mode rejects; including it first here fixes every user.
// Coroutine helpers (co_spawn, use_awaitable, redirect_error) come with it.
#pragma once

#include <utility>

#include <boost/asio.hpp>

namespace sanigate::asio {
using namespace boost::asio;  // NOLINT: a short, project-wide alias for Boost.Asio
using boost::system::error_code;
}  // namespace sanigate::asio
