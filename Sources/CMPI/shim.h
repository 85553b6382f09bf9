// CMPI: the C view of OpenMPI for the `MPI` Swift module. No stable Swift API: import `MPI`.
//
// mpi.h spells its predefined handles as macros over global objects (`MPI_COMM_WORLD` expands to
// `&ompi_mpi_comm_world`, `MPI_STATUS_IGNORE` to a cast of 0), which Swift cannot import. Each
// one is re-exported here as a `static inline` function named after it in lower case with a
// `cmpi_` prefix: `MPI_COMM_WORLD` -> `cmpi_comm_world()`. Plain integer macros are re-exported
// the same way so that the Swift side never depends on how an implementation spells them.
#ifndef CMPI_SHIM_H
#define CMPI_SHIM_H

#include <mpi.h>

// MARK: - Communicators
static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm cmpi_comm_self(void) { return MPI_COMM_SELF; }
static inline MPI_Comm cmpi_comm_null(void) { return MPI_COMM_NULL; }

// MARK: - Datatypes
static inline MPI_Datatype cmpi_datatype_null(void) { return MPI_DATATYPE_NULL; }
static inline MPI_Datatype cmpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype cmpi_char(void) { return MPI_CHAR; }
static inline MPI_Datatype cmpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype cmpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype cmpi_int(void) { return MPI_INT; }
static inline MPI_Datatype cmpi_long(void) { return MPI_LONG; }
static inline MPI_Datatype cmpi_int8_t(void) { return MPI_INT8_T; }
static inline MPI_Datatype cmpi_int16_t(void) { return MPI_INT16_T; }
static inline MPI_Datatype cmpi_int32_t(void) { return MPI_INT32_T; }
static inline MPI_Datatype cmpi_int64_t(void) { return MPI_INT64_T; }
static inline MPI_Datatype cmpi_uint8_t(void) { return MPI_UINT8_T; }
static inline MPI_Datatype cmpi_uint16_t(void) { return MPI_UINT16_T; }
static inline MPI_Datatype cmpi_uint32_t(void) { return MPI_UINT32_T; }
static inline MPI_Datatype cmpi_uint64_t(void) { return MPI_UINT64_T; }
static inline MPI_Datatype cmpi_c_bool(void) { return MPI_C_BOOL; }

// MARK: - Reduction operations
static inline MPI_Op cmpi_op_null(void) { return MPI_OP_NULL; }
static inline MPI_Op cmpi_sum(void) { return MPI_SUM; }
static inline MPI_Op cmpi_prod(void) { return MPI_PROD; }
static inline MPI_Op cmpi_max(void) { return MPI_MAX; }
static inline MPI_Op cmpi_min(void) { return MPI_MIN; }
static inline MPI_Op cmpi_land(void) { return MPI_LAND; }
static inline MPI_Op cmpi_lor(void) { return MPI_LOR; }
static inline MPI_Op cmpi_band(void) { return MPI_BAND; }
static inline MPI_Op cmpi_bor(void) { return MPI_BOR; }
static inline MPI_Op cmpi_bxor(void) { return MPI_BXOR; }

// MARK: - Error handlers, requests, statuses, buffers
static inline MPI_Errhandler cmpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Errhandler cmpi_errors_are_fatal(void) { return MPI_ERRORS_ARE_FATAL; }
static inline MPI_Request cmpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *cmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *cmpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline void *cmpi_in_place(void) { return MPI_IN_PLACE; }

// MARK: - Integer constants
static inline int cmpi_success(void) { return MPI_SUCCESS; }
static inline int cmpi_undefined(void) { return MPI_UNDEFINED; }
static inline int cmpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int cmpi_any_tag(void) { return MPI_ANY_TAG; }
static inline int cmpi_proc_null(void) { return MPI_PROC_NULL; }
static inline int cmpi_tag_ub_keyval(void) { return MPI_TAG_UB; }
static inline int cmpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }
static inline int cmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int cmpi_thread_single(void) { return MPI_THREAD_SINGLE; }
static inline int cmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int cmpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int cmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }

// MARK: - Error classes (the ones a caller is likely to match on)
static inline int cmpi_err_buffer(void) { return MPI_ERR_BUFFER; }
static inline int cmpi_err_count(void) { return MPI_ERR_COUNT; }
static inline int cmpi_err_type(void) { return MPI_ERR_TYPE; }
static inline int cmpi_err_tag(void) { return MPI_ERR_TAG; }
static inline int cmpi_err_comm(void) { return MPI_ERR_COMM; }
static inline int cmpi_err_rank(void) { return MPI_ERR_RANK; }
static inline int cmpi_err_root(void) { return MPI_ERR_ROOT; }
static inline int cmpi_err_truncate(void) { return MPI_ERR_TRUNCATE; }
static inline int cmpi_err_other(void) { return MPI_ERR_OTHER; }
static inline int cmpi_err_intern(void) { return MPI_ERR_INTERN; }
static inline int cmpi_err_arg(void) { return MPI_ERR_ARG; }

#endif // CMPI_SHIM_H
