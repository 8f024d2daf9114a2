// The Modbus protocol's entry in the device registry.
#pragma once

#include "api/adapter.h"

namespace sanigate::dev::modbus {
AdapterSpec Spec();
}
