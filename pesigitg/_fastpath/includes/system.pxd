# System calls of the packet path not covered by Cython's libc/posix declarations.
from posix.types cimport off_t


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    enum:
        SOCK_RAW
        SOCK_CLOEXEC
        MSG_DONTWAIT
    int socket(int domain, int type, int protocol)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    ssize_t sendto(int fd, const void *buf, size_t len, int flags, const sockaddr *addr,
                   socklen_t alen)
    ssize_t recvfrom(int fd, void *buf, size_t len, int flags, sockaddr *addr,
                     socklen_t *alen)


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
        POLLOUT
    int poll(pollfd *fds, unsigned long nfds, int timeout)


cdef extern from "<sys/eventfd.h>" nogil:
    enum:
        EFD_CLOEXEC
        EFD_NONBLOCK
    int eventfd(unsigned int initval, int flags)


cdef extern from "<sys/mman.h>" nogil:
    enum:
        MFD_CLOEXEC
        MAP_POPULATE
    int memfd_create(const char *name, unsigned int flags)


cdef extern from "<net/if.h>" nogil:
    unsigned int if_nametoindex(const char *name)


cdef extern from *:
    """
    #ifndef AF_XDP
    #define AF_XDP 44
    #endif
    #ifndef SOL_XDP
    #define SOL_XDP 283
    #endif
    """
    enum:
        AF_XDP
        SOL_XDP
