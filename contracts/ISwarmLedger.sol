// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ISwarmLedger
/// @notice Membership, round state and merge-leader election of one swarm-learning task.
/// @dev The interface owns the vocabulary (enums, view structs), the custom errors and the events;
/// `SwarmLedger` implements it. docs/protocol.md describes the round protocol in prose.
interface ISwarmLedger {
    // ------------------------------------------------------------------ vocabulary
    /// @notice Where a site stands. `Removed` sites may ask to join again.
    enum MemberStatus {
        None,
        Pending,
        Active,
        Removed
    }

    /// @notice Phase of a round, derived from stored facts (election, close, abandonment).
    enum RoundStatus {
        Open,
        Elected,
        Finalized,
        Abandoned
    }

    /// @notice What the consortium agreed on at deploy time.
    struct Binding {
        bytes32 taskHash;
        bytes32 initialModelHash;
        uint32 minPeers;
        uint32 commitWindow;
        uint32 leaderTimeout;
        bool majorityAdmission;
        address admin;
        uint64 deployBlock;
    }

    struct MemberView {
        address account;
        bytes32 curveKey;
        string endpoint;
        MemberStatus status;
        uint64 joinedBlock;
        uint64 statusBlock;
        uint16 admitVotes;
        uint16 removeVotes;
    }

    struct CommitView {
        address site;
        bytes32 updateHash;
        uint32 nSamples;
        uint64 blockNumber;
    }

    struct RoundView {
        uint256 round;
        RoundStatus status;
        uint32 term;
        address leader;
        bytes32 baseHash;
        bytes32 mergedHash;
        uint64 openedBlock;
        uint64 electedBlock;
        uint64 closedBlock;
        CommitView[] commits;
        address[] failedLeaders;
        address[] included;
    }

    // ------------------------------------------------------------------ errors
    /// @dev A constructor argument is out of range; `field` names it.
    error InvalidBinding(string field);
    error NotAdmin(address caller);
    error ZeroAddress();
    error NotActiveMember(address account);
    error AlreadyMember(address account, MemberStatus status);
    error InvalidCurveKey();
    error CurveKeyTaken(bytes32 curveKey, address owner);
    error InvalidEndpoint(uint256 length);
    error NotPending(address account, MemberStatus status);
    error NotRemovable(address account, MemberStatus status);
    error NotMember(address account);
    error AlreadyVoted(address candidate, address voter);
    error SelfVote(address account);
    error WrongRound(uint256 given, uint256 current);
    error UnknownRound(uint256 round, uint256 current);
    error RoundNotOpen(uint256 round, RoundStatus status);
    error NotElected(uint256 round, RoundStatus status);
    error AlreadyCommitted(uint256 round, address site);
    error ZeroHash();
    error ZeroSamples();
    error RoundFull(uint256 round, uint256 maxCommitters);
    error NotEnoughCommits(uint256 round, uint256 commits, uint256 minPeers);
    error CommitWindowOpen(uint256 round, uint256 electableAtBlock);
    error ElectionTooEarly(uint256 round, uint256 electableAtBlock);
    error LeaderTimeoutNotReached(uint256 round, uint256 reelectableAtBlock);
    error NotLeader(uint256 round, address caller, address leader);
    error NothingIncluded(uint256 round);
    error NotCommitter(uint256 round, address account);
    error DuplicateIncluded(uint256 round, address account);

    // ------------------------------------------------------------------ events
    event AdminTransferred(address indexed previousAdmin, address indexed newAdmin);
    event JoinRequested(address indexed account, bytes32 curveKey, string endpoint);
    event VoteCast(address indexed candidate, address indexed voter, bool admit, uint256 votes, uint256 needed);
    event MemberAdmitted(address indexed account, address indexed by);
    event MemberRemoved(address indexed account, address indexed by);
    event BootstrapClosed(uint256 activeMembers);
    event EndpointUpdated(address indexed account, string endpoint);
    event RoundOpened(uint256 indexed round, bytes32 baseHash);
    event Committed(uint256 indexed round, address indexed site, bytes32 updateHash, uint32 nSamples);
    event LeaderElected(uint256 indexed round, address indexed leader, uint32 term, uint256 seedBlock);
    event LeaderFailed(uint256 indexed round, address indexed leader, uint32 term);
    event RoundFinalized(uint256 indexed round, address indexed leader, uint32 term, bytes32 mergedHash, address[] included);
    event RoundAbandoned(uint256 indexed round, uint32 term);

    // ------------------------------------------------------------------ membership
    /// @notice Ask to join with a CURVE public key (32 raw bytes) and a ZeroMQ endpoint such as tcp://host:port.
    function requestJoin(bytes32 curveKey, string calldata endpoint) external;

    /// @notice Admit a pending site: directly by the admin, or as one vote in majority mode.
    function admit(address account) external;

    /// @notice Remove a pending or active site: directly by the admin, or as one vote in majority mode.
    function remove(address account) external;

    /// @notice Change the caller's endpoint (pending or active members).
    function updateEndpoint(string calldata endpoint) external;

    /// @notice Hand the admin role to another account.
    function transferAdmin(address newAdmin) external;

    // ------------------------------------------------------------------ rounds
    /// @notice Commit to update `updateHash` trained on `nSamples` samples, once per round, current round only.
    function commit(uint256 round, bytes32 updateHash, uint32 nSamples) external;

    /// @notice Draw the round's merge leader among its committers once the round is electable.
    function elect(uint256 round) external;

    /// @notice Replace a leader that did not finalize within `leaderTimeout` blocks; abandons the round
    /// when no committer is left to draw.
    function reelect(uint256 round) external;

    /// @notice Close the round with the merged model's hash and the committers whose updates it includes.
    function finalize(uint256 round, bytes32 mergedHash, address[] calldata included) external;

    // ------------------------------------------------------------------ views
    function binding() external view returns (Binding memory);
    function admin() external view returns (address);
    function currentRound() external view returns (uint256);
    function activeMemberCount() external view returns (uint256);
    function memberCount() external view returns (uint256);
    function getMember(address account) external view returns (MemberView memory);
    function getMembers() external view returns (MemberView[] memory);
    function hasVoted(address candidate, address voter, bool admitVote) external view returns (bool);
    function roundStatus(uint256 round) external view returns (RoundStatus);
    function baseHash(uint256 round) external view returns (bytes32);
    function getRound(uint256 round) external view returns (RoundView memory);
    function hasCommitted(uint256 round, address site) external view returns (bool);
    function canElect(uint256 round) external view returns (bool);
    function canReelect(uint256 round) external view returns (bool);
}
