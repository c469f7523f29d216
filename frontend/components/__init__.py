"""Pure functions returning the chat page's parts."""
