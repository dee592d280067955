"""Pallas kernels. Each module holds a pure-jnp reference, the forward and backward kernels, the
``custom_vjp`` joining them, its block sizes in one dataclass, and a dispatcher that picks kernel or
reference by platform and config."""
