// zlib (Debian zlib1g-dev) as a Swift module: only its CRC-32 is used (checkpoint blobs).
#include <zlib.h>
