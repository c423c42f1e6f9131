"""The oneDNN GRU kernel's C++ FFI handlers (``gru_onednn.cc``) and build script (``build.sh``,
run by ``make native``); the built ``libjaxgru_onednn.so`` lands here (``jaxgru.onednn``)."""
