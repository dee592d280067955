"""Pallas kernels. Each kernel module holds a pure-jnp reference, the forward and backward kernels,
the ``custom_vjp`` joining them, its block sizes in one dataclass, and its public entry point;
``dispatch`` holds what they share: backend detection, the rule that picks kernel, interpreter or
reference from ``implementation=`` / ``interpret=``, compiler params per backend and padding."""
