// Open MPI's C interface as the MPI transport uses it, loaded at run time.
//
// libvpipe.so does not link libmpi: a host that never asks for TRANSPORT_MPI (a pip-installed
// wheel, a C host on a machine without Open MPI) needs no MPI at all. The first MPI session
// calls vp_mpi_load(), which dlopens libmpi.so.40 (then libmpi.so) with RTLD_GLOBAL (Open
// MPI's plug-ins resolve libmpi's symbols globally) and resolves every function below with
// dlsym. Open MPI's predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_MIN, ...) are the
// addresses of global objects (ompi_mpi_comm_world, ...): they are dlsym'd too.
//
// The types are Open MPI's ABI for libmpi.so.40 (Open MPI 3.0 to 5.x), written out here so
// that building needs no mpi.h; where Open MPI's header is installed, mpi.c checks them
// against it at compile time. Every function is hidden (not exported from libvpipe.so).
#ifndef VPIPE_MPI_H
#define VPIPE_MPI_H
#include <stddef.h>

#ifndef OPEN_MPI
typedef struct ompi_communicator_t *MPI_Comm;
typedef struct ompi_datatype_t *MPI_Datatype;
typedef struct ompi_op_t *MPI_Op;
typedef struct ompi_request_t *MPI_Request;
typedef struct ompi_errhandler_t *MPI_Errhandler;
typedef struct ompi_status_public_t MPI_Status;
struct ompi_status_public_t {
    int MPI_SOURCE;
    int MPI_TAG;
    int MPI_ERROR;
    int _cancelled;
    size_t _ucount;
};
#endif

#define VP_MPI_SUCCESS 0
#define VP_MPI_ANY_SOURCE (-1)
#define VP_MPI_THREAD_SERIALIZED 2
#define VP_MPI_TAG_UB 0

/// Loads libmpi and resolves every function and handle (idempotent, thread-safe). 0 on
/// success; otherwise -1 and a message naming what was looked for in `error`.
int vp_mpi_load(char *error, size_t capacity);

// Handles (valid after vp_mpi_load).
MPI_Comm vp_mpi_comm_world(void);
MPI_Comm vp_mpi_comm_null(void);
MPI_Datatype vp_mpi_float(void);
MPI_Datatype vp_mpi_byte(void);
MPI_Datatype vp_mpi_int(void);
MPI_Datatype vp_mpi_int64(void);
MPI_Op vp_mpi_min(void);
MPI_Op vp_mpi_sum(void);
MPI_Request vp_mpi_request_null(void);
MPI_Errhandler vp_mpi_errors_return(void);
static inline MPI_Status *vp_mpi_status_ignore(void) { return (MPI_Status *)0; }
static inline int vp_mpi_success(void) { return VP_MPI_SUCCESS; }
static inline int vp_mpi_any_source(void) { return VP_MPI_ANY_SOURCE; }
static inline int vp_mpi_thread_serialized(void) { return VP_MPI_THREAD_SERIALIZED; }
/// The largest tag value (at least 32767 by the standard).
int vp_mpi_tag_ub(void);

// The functions (same arguments as MPI_<Name>).
int vp_mpi_init_thread(int *argc, char ***argv, int required, int *provided);
int vp_mpi_initialized(int *flag);
int vp_mpi_query_thread(int *provided);
int vp_mpi_finalize(void);
int vp_mpi_finalized(int *flag);
int vp_mpi_comm_rank(MPI_Comm comm, int *rank);
int vp_mpi_comm_size(MPI_Comm comm, int *size);
int vp_mpi_comm_dup(MPI_Comm comm, MPI_Comm *newcomm);
int vp_mpi_comm_set_errhandler(MPI_Comm comm, MPI_Errhandler errhandler);
int vp_mpi_bcast(void *buffer, int count, MPI_Datatype datatype, int root, MPI_Comm comm);
int vp_mpi_ibcast(void *buffer, int count, MPI_Datatype datatype, int root, MPI_Comm comm, MPI_Request *request);
int vp_mpi_iallreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype, MPI_Op op, MPI_Comm comm, MPI_Request *request);
int vp_mpi_barrier(MPI_Comm comm);
int vp_mpi_ibarrier(MPI_Comm comm, MPI_Request *request);
int vp_mpi_send(const void *buf, int count, MPI_Datatype datatype, int dest, int tag, MPI_Comm comm);
int vp_mpi_recv(void *buf, int count, MPI_Datatype datatype, int source, int tag, MPI_Comm comm, MPI_Status *status);
int vp_mpi_isend(const void *buf, int count, MPI_Datatype datatype, int dest, int tag, MPI_Comm comm, MPI_Request *request);
int vp_mpi_irecv(void *buf, int count, MPI_Datatype datatype, int source, int tag, MPI_Comm comm, MPI_Request *request);
int vp_mpi_test(MPI_Request *request, int *flag, MPI_Status *status);
int vp_mpi_wait(MPI_Request *request, MPI_Status *status);
int vp_mpi_cancel(MPI_Request *request);
int vp_mpi_get_count(const MPI_Status *status, MPI_Datatype datatype, int *count);
#endif
