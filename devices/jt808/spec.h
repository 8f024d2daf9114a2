// The JT/T 808 protocol's entry in the device registry.
#pragma once

#include "api/adapter.h"

namespace sanigate::dev::jt808 {
AdapterSpec Spec();
}
