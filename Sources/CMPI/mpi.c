// The MPI functions and handles behind dlsym'd pointers (see include/vpipe_mpi.h).
#if __has_include(<openmpi/mpi.h>)
// Only to check the ABI written out in vpipe_mpi.h against the installed Open MPI.
#include <openmpi/mpi.h>
#endif
#include "vpipe_mpi.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(MPI_Status) == 24 && offsetof(MPI_Status, MPI_SOURCE) == 0,
               "MPI_Status is not Open MPI's (libmpi.so.40) layout");
#ifdef OPEN_MPI
_Static_assert(VP_MPI_SUCCESS == MPI_SUCCESS, "MPI_SUCCESS");
_Static_assert(VP_MPI_ANY_SOURCE == MPI_ANY_SOURCE, "MPI_ANY_SOURCE");
_Static_assert(VP_MPI_THREAD_SERIALIZED == MPI_THREAD_SERIALIZED, "MPI_THREAD_SERIALIZED");
_Static_assert(VP_MPI_TAG_UB == MPI_TAG_UB, "MPI_TAG_UB");
#endif

// X(name, MPI symbol, parameters, arguments): every function the transport calls.
#define VP_MPI_FUNCTIONS(X) \
    X(init_thread, MPI_Init_thread, (int *argc, char ***argv, int required, int *provided), (argc, argv, required, provided)) \
    X(initialized, MPI_Initialized, (int *flag), (flag)) \
    X(query_thread, MPI_Query_thread, (int *provided), (provided)) \
    X(finalize, MPI_Finalize, (void), ()) \
    X(finalized, MPI_Finalized, (int *flag), (flag)) \
    X(comm_rank, MPI_Comm_rank, (MPI_Comm comm, int *rank), (comm, rank)) \
    X(comm_size, MPI_Comm_size, (MPI_Comm comm, int *size), (comm, size)) \
    X(comm_dup, MPI_Comm_dup, (MPI_Comm comm, MPI_Comm *newcomm), (comm, newcomm)) \
    X(comm_set_errhandler, MPI_Comm_set_errhandler, (MPI_Comm comm, MPI_Errhandler handler), (comm, handler)) \
    X(comm_get_attr, MPI_Comm_get_attr, (MPI_Comm comm, int key, void *value, int *flag), (comm, key, value, flag)) \
    X(bcast, MPI_Bcast, (void *buffer, int count, MPI_Datatype type, int root, MPI_Comm comm), (buffer, count, type, root, comm)) \
    X(ibcast, MPI_Ibcast, (void *buffer, int count, MPI_Datatype type, int root, MPI_Comm comm, MPI_Request *request), (buffer, count, type, root, comm, request)) \
    X(iallreduce, MPI_Iallreduce, (const void *sendbuf, void *recvbuf, int count, MPI_Datatype type, MPI_Op op, MPI_Comm comm, MPI_Request *request), (sendbuf, recvbuf, count, type, op, comm, request)) \
    X(barrier, MPI_Barrier, (MPI_Comm comm), (comm)) \
    X(ibarrier, MPI_Ibarrier, (MPI_Comm comm, MPI_Request *request), (comm, request)) \
    X(send, MPI_Send, (const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm), (buf, count, type, dest, tag, comm)) \
    X(recv, MPI_Recv, (void *buf, int count, MPI_Datatype type, int source, int tag, MPI_Comm comm, MPI_Status *status), (buf, count, type, source, tag, comm, status)) \
    X(isend, MPI_Isend, (const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request *request), (buf, count, type, dest, tag, comm, request)) \
    X(irecv, MPI_Irecv, (void *buf, int count, MPI_Datatype type, int source, int tag, MPI_Comm comm, MPI_Request *request), (buf, count, type, source, tag, comm, request)) \
    X(test, MPI_Test, (MPI_Request *request, int *flag, MPI_Status *status), (request, flag, status)) \
    X(wait, MPI_Wait, (MPI_Request *request, MPI_Status *status), (request, status)) \
    X(cancel, MPI_Cancel, (MPI_Request *request), (request)) \
    X(get_count, MPI_Get_count, (const MPI_Status *status, MPI_Datatype type, int *count), (status, type, count))

// X(name, type, Open MPI's global object): the predefined handles.
#define VP_MPI_HANDLES(X) \
    X(comm_world, MPI_Comm, ompi_mpi_comm_world) \
    X(comm_null, MPI_Comm, ompi_mpi_comm_null) \
    X(float, MPI_Datatype, ompi_mpi_float) \
    X(byte, MPI_Datatype, ompi_mpi_byte) \
    X(int, MPI_Datatype, ompi_mpi_int) \
    X(int64, MPI_Datatype, ompi_mpi_int64_t) \
    X(min, MPI_Op, ompi_mpi_op_min) \
    X(sum, MPI_Op, ompi_mpi_op_sum) \
    X(request_null, MPI_Request, ompi_request_null) \
    X(errors_return, MPI_Errhandler, ompi_mpi_errors_return)

#define VP_POINTER(name, symbol, params, args) static int (*p_##name) params;
VP_MPI_FUNCTIONS(VP_POINTER)
#define VP_HANDLE(name, type, symbol) static type h_##name;
VP_MPI_HANDLES(VP_HANDLE)

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

/// Opens the first library that loads: $VPIPE_MPI_LIBRARY alone when set, else libmpi.so.40
/// then libmpi.so. On failure `tried` lists what was looked for and dlopen's last word.
static void *open_library(char *tried, size_t capacity, const char **opened) {
    const char *chosen = getenv("VPIPE_MPI_LIBRARY");
    const char *names[] = {chosen && *chosen ? chosen : "libmpi.so.40", chosen && *chosen ? NULL : "libmpi.so", NULL};
    tried[0] = 0;
    for (int i = 0; names[i]; i++) {
        void *library = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (library) { *opened = names[i]; return library; }
        const char *why = dlerror();
        size_t used = strlen(tried);
        snprintf(tried + used, capacity - used, "%s%s (%s)", used ? ", " : "", names[i], why ? why : "not found");
    }
    return NULL;
}

int vp_mpi_load(char *error, size_t capacity) {
    pthread_mutex_lock(&load_lock);
    if (loaded) { pthread_mutex_unlock(&load_lock); return 0; }
    char tried[1024];
    const char *opened = NULL;
    void *library = open_library(tried, sizeof tried, &opened);
    if (!library) {
        snprintf(error, capacity,
                 "TRANSPORT_MPI needs Open MPI's libmpi.so.40, which could not be loaded: tried %s. "
                 "Install Open MPI (Debian/Ubuntu: apt install libopenmpi3 or libopenmpi40; "
                 "Fedora: dnf install openmpi) or set VPIPE_MPI_LIBRARY to the library's path",
                 tried);
        pthread_mutex_unlock(&load_lock);
        return -1;
    }
    const char *missing = NULL;
#define VP_RESOLVE(name, symbol, params, args) \
    if (!missing && !(*(void **)&p_##name = dlsym(library, #symbol))) missing = #symbol;
    VP_MPI_FUNCTIONS(VP_RESOLVE)
#define VP_RESOLVE_HANDLE(name, type, symbol) \
    if (!missing && !(h_##name = (type)dlsym(library, #symbol))) missing = #symbol;
    VP_MPI_HANDLES(VP_RESOLVE_HANDLE)
    if (missing) {
        snprintf(error, capacity,
                 "the MPI library that was loaded (%s) lacks %s: TRANSPORT_MPI needs Open MPI "
                 "(libmpi.so.40, Open MPI 3.0 or later)", opened, missing);
        pthread_mutex_unlock(&load_lock);
        return -1;
    }
    loaded = 1;
    pthread_mutex_unlock(&load_lock);
    return 0;
}

// Called only after vp_mpi_load succeeded; before that a call fails rather than crashes.
#define VP_FORWARD(name, symbol, params, args) \
    int vp_mpi_##name params { return p_##name ? p_##name args : -1; }
VP_MPI_FUNCTIONS(VP_FORWARD)
#define VP_HANDLE_GETTER(name, type, symbol) \
    type vp_mpi_##name(void) { return h_##name; }
VP_MPI_HANDLES(VP_HANDLE_GETTER)

int vp_mpi_tag_ub(void) {
    int *value = 0, flag = 0;
    if (vp_mpi_comm_get_attr(h_comm_world, VP_MPI_TAG_UB, &value, &flag) != VP_MPI_SUCCESS) return 32767;
    return flag && value ? *value : 32767;
}
