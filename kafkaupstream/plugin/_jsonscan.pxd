# C types for _jsonscan.py when Cython compiles it (the .py stays plain Python, run interpreted
# under KAFKAUPSTREAM_NO_EXTENSIONS=1). Every index is a Py_ssize_t, every byte an unsigned char.
# Every index is checked against n before it is read, so setup.py turns Cython's own
# bounds checks off for this module.
import cython

@cython.locals(spaced=cython.bint, c=cython.uchar, h=cython.uchar, k=cython.Py_ssize_t)
cdef Py_ssize_t _string(bytes data, Py_ssize_t i, Py_ssize_t n)

@cython.locals(c=cython.uchar)
cdef Py_ssize_t _number(bytes data, Py_ssize_t i, Py_ssize_t n)

@cython.locals(c=cython.uchar)
cdef Py_ssize_t _space(bytes data, Py_ssize_t i, Py_ssize_t n)

@cython.locals(
    n=cython.Py_ssize_t,
    spaced=cython.bint,
    stack=bytearray,
    depth=cython.Py_ssize_t,
    i=cython.Py_ssize_t,
    c=cython.uchar,
    is_object=cython.bint,
    in_object=cython.bint,
    end=cython.Py_ssize_t,
)
cpdef int scan(bytes data)

@cython.locals(n=cython.Py_ssize_t, out=bytearray, j=cython.Py_ssize_t, in_string=cython.bint,
               i=cython.Py_ssize_t, c=cython.uchar)
cpdef bytes strip(bytes data)
