/* CHECK for the C host tests: on failure, count it and print the condition, where it is,
 * and what was expected and seen (printf-style), then carry on with the next check. */
#ifndef VPIPE_TEST_CHECK_H
#define VPIPE_TEST_CHECK_H

#include <stdio.h>

static int failures = 0;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
        }                                                                   \
    } while (0)

#endif
