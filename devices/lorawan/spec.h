// The LoRaWAN protocol's entry in the device registry.
#pragma once

#include "api/adapter.h"

namespace sanigate::dev::lorawan {
AdapterSpec Spec();
}
