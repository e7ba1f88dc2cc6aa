"""The parts of the serial output: transports (a serial port or TCP host:port), profiles
(what bytes a device expects) and the character maps of caption encoders and character LCDs.
The output itself, which the worker runs, is ``edgecap.outputs.serial.output.SerialOutput``."""
