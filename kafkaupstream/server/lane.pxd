# C types for lane.py when Cython compiles it: LaneConnection becomes an extension type with its
# state in C fields, its internal steps C-level calls. The .py stays plain Python, interpreted
# under KAFKAUPSTREAM_NO_EXTENSIONS=1.
import cython

cdef int _IDLE, _BODY, _BUSY, _DELEGATED, _GONE, _HTTP_REQ_CALL, _EXTRA_INFO
cdef int _HOLDS_NOTHING, _HOLDS_AWAITING_BODY, _HOLDS_IN_FLIGHT

cdef class LaneConnection:
    cdef object _state, _transport, _loop, _data, _delegate, _stops
    cdef object _call, _call_frame, _conf, _routing, _pending, _waiter, _coro
    cdef Py_ssize_t _need
    cdef int _phase, _holds
    cdef bint _eof, _paused, _draining
    cdef public bint busy

    @cython.locals(phase=cython.int, size=cython.Py_ssize_t, length=cython.Py_ssize_t,
                   end=cython.Py_ssize_t, kind=cython.int)
    cdef _drain(self)
    cdef _hand_over(self)
    cdef _closed_by_peer(self)
    cdef _call_received(self, frame)
    cdef _body_received(self, body)
    cdef _refused(self, exc)
    cdef _produce(self, record)
    cdef _advance(self)
    cdef _produce_failed(self, exc)
    cdef _producer_refused(self, exc)
    cdef _delivered(self, outcome)
    cdef _release_plugin(self)
    cdef _plugin_failed(self, exc=*)
    cdef _answer(self, answer)
    cdef _end_exchange(self)
    cdef _bad_frame(self)
    cdef _body_lost(self)
    cdef _abort_exchange(self, cause)
    cdef _oracle(self)
    cdef _abort_silently(self, bint release=*)
    cdef _write(self, data)
