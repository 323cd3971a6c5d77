"""The password policy: at least 12 characters, not the username, not a common password."""

from __future__ import annotations

MIN_LENGTH = 12
MAX_LENGTH = 1024

# A small built-in list: the most common passwords of public breach corpora that are 12
# characters or longer (shorter ones fail the length rule anyway), and the product's own names.
COMMON_PASSWORDS: frozenset[str] = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789123",
        "1234567890qwerty",
        "1q2w3e4r5t6y",
        "1q2w3e4r5t6y7u8i",
        "1qaz2wsx3edc",
        "1qaz2wsx3edc4rfv",
        "zaq12wsxcde3",
        "qwertyuiopasdfghjkl",
        "qwertyuiop123",
        "qwertyuiop1234",
        "qwerty123456",
        "qwerty1234567",
        "qwertyqwerty",
        "asdfghjkl123",
        "asdfghjklqwerty",
        "zxcvbnm123456",
        "abcdefghijkl",
        "abcdefghijklmnop",
        "abc123456789",
        "abcd12345678",
        "aaaaaaaaaaaa",
        "111111111111",
        "000000000000",
        "password1234",
        "password12345",
        "password123456",
        "password123!",
        "password1234!",
        "passwordpassword",
        "mypassword123",
        "p@ssw0rd1234",
        "p@ssword1234",
        "passw0rd1234",
        "iloveyou1234",
        "iloveyouforever",
        "letmein12345",
        "welcome12345",
        "welcome123456",
        "welcometothejungle",
        "administrator",
        "administrator1",
        "administrator123",
        "admin1234567",
        "adminadmin123",
        "adminpassword",
        "rootpassword",
        "changeme1234",
        "changemenow!",
        "trustno1trustno1",
        "football1234",
        "baseball1234",
        "basketball123",
        "superman1234",
        "starwars1234",
        "sunshine1234",
        "princess1234",
        "monkey123456",
        "dragon123456",
        "master123456",
        "michael12345",
        "jennifer1234",
        "whatever1234",
        "computer1234",
        "internet1234",
        "qwerty!@#$%^",
        "!@#$%^&*()_+",
        "correcthorsebatterystaple",
        "correct horse battery staple",
        "thequickbrownfox",
        "thequickbrownfoxjumpsoverthelazydog",
        "voipcloud123",
        "voipcloud1234",
        "voipcloudadmin",
        "voipcloudpassword",
        "voipnowadmin123",
        "voipnow12345",
        "cloudmanagement",
        "infrastructure",
        "infrastructure1",
    }
)


def password_problem(password: str, username: str) -> str | None:
    """Why `password` is not acceptable for `username`, or None. Never quotes the password."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters long"
    if password.strip().casefold() == username.strip().casefold():
        return "must not be the username"
    if password.casefold() in COMMON_PASSWORDS:
        return "is a commonly used password; choose another"
    return None
