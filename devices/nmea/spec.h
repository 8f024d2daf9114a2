// The NMEA 0183 protocol's entry in the device registry.
#pragma once

#include "api/adapter.h"

namespace sanigate::dev::nmea {
AdapterSpec Spec();
}
