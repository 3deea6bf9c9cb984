// Open MPI's C interface as a Swift module (Debian: libopenmpi-dev; pkg-config ompi-c,
// headers in /usr/lib/x86_64-linux-gnu/openmpi/include). MPI_COMM_WORLD, MPI_FLOAT and the
// other handles are macros over addresses of global objects, which Swift cannot import:
// the static inline functions below hand them over.
#ifndef VPIPE_CMPI_SHIM_H
#define VPIPE_CMPI_SHIM_H
#include <mpi.h>

static inline MPI_Comm vp_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm vp_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype vp_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype vp_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype vp_mpi_int(void) { return MPI_INT; }
static inline MPI_Datatype vp_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Op vp_mpi_min(void) { return MPI_MIN; }
static inline MPI_Op vp_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Request vp_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Errhandler vp_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Status *vp_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int vp_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int vp_mpi_success(void) { return MPI_SUCCESS; }
static inline int vp_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int vp_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
/// The largest tag value (at least 32767 by the standard).
static inline int vp_mpi_tag_ub(void) {
    int *value = 0, flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &value, &flag);
    return flag && value ? *value : 32767;
}
#endif
