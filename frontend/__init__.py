"""The fleetchat UI: a Reflex app that is a Socket.IO client of the chat backend."""
